// `hubbub/node`: serve a hub on Node, or use the Node upgrade adapter in your own Hono app.
export { main } from './main.ts';
export { serveNode, type NodeServer, type ServeNodeOptions } from './serve.ts';
export { createNodeWebSocket, type NodeWebSocketOptions } from './websocket.ts';
export { createNodeFanOut } from './fanout.ts';
