// hubbub's public API: what a library user imports. Runtime-free; runtimes are in `hubbub/node`
// (and src/runtime/deno.ts for Deno).
export { createApp, type RuntimeAdapter } from './app.ts';
export { CloseCode, ConnectionClosed, HubError, type CloseKind, type HubErrorCode, type RefusalReason } from './errors.ts';
export { echoHandler, type Handler, type HandlerContext, type MessageData } from './handler.ts';
export { checkHandshake } from './handshake.ts';
export { createHub, Hub, type HubInit, type HubStats, type ShutdownResult } from './hub.ts';
export { createLogger, type Logger } from './log.ts';
export { optionSpecs, parseCommandLine, resolveOptions, type HubOptions, type LogLevel } from './options.ts';
export { VERSION } from './version.ts';
