// Cloudflare Workers entry (wrangler.toml `main`): the Worker and its Durable Object class.
// workerd treats every export of this module as an entrypoint, so it exports those two and nothing else.
export { HubObject } from './runtime/workerd/object.ts';
export { worker as default } from './runtime/workerd/worker.ts';
