// `hubbub/bun`: serve a hub on Bun, or use the Bun upgrade adapter in your own Hono app.
export { main } from './main.ts';
export { serveBun, type BunServed } from './serve.ts';
export { createBunWebSocket, type BunWebSocketOptions } from './websocket.ts';
export { createBunFanOut, NATIVE_TOPIC_PREFIX } from './fanout.ts';
