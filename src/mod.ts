// hubbub's public API: what a library user imports. Runtime-free; the runtimes are `hubbub/node`,
// `hubbub/bun`, `hubbub/workerd` (and src/runtime/deno/ for Deno).
export { createApp, type RuntimeAdapter } from './app.ts';
export type { FanOut, Handler, HandlerContext, HandlerFactory, HubApi, HubEvents, MessageData, NativeTopics, Principal, PublishOptions, SocketLike } from './contracts.ts';
export { CloseCode, ConnectionClosed, HubError, type CloseKind, type HubErrorCode, type RefusalReason } from './errors.ts';
export { echoHandler } from './handlers/echo.ts';
export { createPubSubHandler, type PubSubOptions } from './handlers/pubsub.ts';
export { checkHandshake } from './handshake.ts';
export { createHub, Hub, type HubInit, type ShutdownResult } from './hub.ts';
export type { HubStats } from './stats.ts';
export { createLogger, type Logger, type LogLevel } from './log.ts';
export { optionSpecs, parseCommandLine, resolveOptions, type HubOptions } from './options.ts';
export { VERSION } from './version.ts';
