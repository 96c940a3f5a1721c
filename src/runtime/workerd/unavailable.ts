// Stands in for Node-only client libraries (ioredis, the NATS transport) in the workerd bundle:
// wrangler.toml aliases them here, so the Worker does not carry code that needs Node's TCP sockets.
// A backplane cannot run inside a Durable Object; HubObject refuses HUBBUB_BACKPLANE before this
// module could ever be loaded, and loading it anyway fails with this message.
throw new Error('hubbub: this module is not available on workerd (backplanes need Node or Deno)');
