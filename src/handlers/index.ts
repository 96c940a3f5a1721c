// The handlers selectable by name (`--handler echo|pubsub`). Runtime-free.
import type { HandlerFactory } from '../contracts.ts';
import { echoHandler } from './echo.ts';
import { createPubSubHandler } from './pubsub.ts';

export const builtinHandlers: Readonly<Record<string, HandlerFactory>> = {
  echo: () => echoHandler,
  pubsub: (hub) => createPubSubHandler(hub),
};
