// `hubbub/workerd`: the Worker, the Durable Object holding the hub, and `hubObjectWith` for bundled handlers.
export type { DurableObjectNamespace, DurableObjectState, HubEnv } from './api.ts';
export { HubObject, hubObjectWith } from './object.ts';
export { worker } from './worker.ts';
