// The handlers selectable by name (`--handler echo|pubsub`). Runtime-free.
import type { Handler, HubApi } from '../contracts.ts';
import type { HubOptions } from '../options.ts';
import { echoHandler } from './echo.ts';
import { createPubSubHandler } from './pubsub.ts';

/** A built-in handler for a hub (the hub's options tune it). */
export type BuiltinFactory = (hub: HubApi & { readonly options: Pick<HubOptions, 'allowClientPublish'> }) => Handler;

export const builtinHandlers: Readonly<Record<string, BuiltinFactory>> = {
  echo: () => echoHandler,
  pubsub: (hub) => createPubSubHandler(hub, { allowClientPublish: hub.options.allowClientPublish }),
};
