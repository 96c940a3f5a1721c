// The built-in JSON topic protocol (`--handler pubsub`). Runtime-free.
//
// client → server                                       server → client
//   {"type":"subscribe","topic":"room"}                   {"type":"subscribed","topic":"room","offset":12,"epoch":"k3…"}
//   {"type":"subscribe","topic":"room",                   {"type":"subscribed","topic":"room","offset":14,"epoch":"k3…","recovered":true}
//    "since":{"offset":12,"epoch":"k3…"}}                 then the missed messages (offsets 13 and 14), before any newer one
//   {"type":"unsubscribe","topic":"room"}                 {"type":"unsubscribed","topic":"room"}
//   {"type":"publish","topic":"room","data":…,"id":7}     {"type":"message","topic":"room","offset":15,"data":…,"from":"4"}
//                                                         {"type":"published","id":7,"topic":"room","offset":15,"epoch":"k3…","delivered":3}
//   {"type":"presence","topic":"room"}                    {"type":"presence","topic":"room","count":2,"members":[{"id":"4","principal":"alice"},…]}
//   (with --presence-events, to the other subscribers)   {"type":"join"|"leave","topic":"room","id":"4","principal":"alice"}
//   (when the topic's stream was lost: the shared store lost its data) {"type":"subscribed","topic":"room","offset":0,"epoch":"n7…","recovered":false,"reset":true}
//   {"type":"ping"}                                       {"type":"pong"}
//   (JWT auth: 30 s before the token's exp, or at once)   {"type":"expiring","in":28000}
//   {"type":"refresh","token":"<a fresh JWT, same sub>"}  {"type":"refreshed","exp":1767225600} (its exp, seconds; null: none)
//                                                         or {"type":"error","code":"bad-token","message":"token expired"}
//   anything malformed, or a subscribe over a cap          {"type":"error","code":"bad-json"|…|"subscription-limit"|"topic-limit","message":…}
//                                                         (an error about a publish carries its "id")
//
// `offset` counts the publications on a topic (each gets the next); a subscriber that sees 13 after
// 11 knows it missed one (the `drop` slow-consumer policy). `epoch` names the topic's stream: after
// a restart or a lost history it is new, and a `since` from the old one answers `"recovered":false`
// (reload your state). A malformed message never closes the socket.
import type { Handler, HandlerContext, HubApi, StreamPosition } from '../contracts.ts';
import { isValidTopic } from '../delivery/topics.ts';

export type TopicAction = 'subscribe' | 'publish' | 'presence';

export interface PubSubOptions {
  /**
   * Decides whether a connection may subscribe to or publish on a topic.
   * @default topics starting with `$` are reserved for the server; everything else is allowed
   */
  authorize?(ctx: HandlerContext, topic: string, action: TopicAction): boolean | Promise<boolean>;
  /**
   * Whether clients may publish at all; false refuses every client publish (`forbidden`) before
   * `authorize` is asked, leaving publishing to the backend (`hub.publish`). @default true
   */
  allowClientPublish?: boolean;
}

export type PubSubErrorCode = 'bad-json' | 'bad-message' | 'unknown-type' | 'bad-topic' | 'forbidden' | 'binary-unsupported' | 'subscription-limit' | 'topic-limit' | 'unavailable' | 'bad-token';

/**
 * The default rules: a token with a topics claim decides (presence goes with subscribe); without
 * one (or without JWT auth), any topic not starting with `$` (reserved for the server).
 */
const defaultAuthorize = (ctx: HandlerContext, topic: string, action: TopicAction) => {
  const grants = ctx.token?.topics;
  if (grants) return grants.allows(action === 'publish' ? 'publish' : 'subscribe', topic);
  return !topic.startsWith('$');
};

function errorEnvelope(code: PubSubErrorCode, message: string, extra: Record<string, unknown> = {}): string {
  return JSON.stringify({ type: 'error', code, message, ...extra });
}

interface ClientMessage {
  type?: unknown;
  topic?: unknown;
  data?: unknown;
  id?: unknown;
  since?: unknown;
  token?: unknown;
}

/** A `since` as a client sends it: `{"offset": <integer ≥ 0>, "epoch": <string>}`. */
function isPosition(value: unknown): value is StreamPosition {
  if (typeof value !== 'object' || value === null) return false;
  const { offset, epoch } = value as { offset?: unknown; epoch?: unknown };
  return Number.isSafeInteger(offset) && (offset as number) >= 0 && typeof epoch === 'string' && epoch.length > 0 && epoch.length <= 64;
}

/** What an action left to finish, as the handler's promise (a failure closes the socket with 1011). */
function settled(result: void | Promise<unknown>): void | Promise<void> {
  return result instanceof Promise ? result.then(() => undefined) : undefined;
}

export function createPubSubHandler(hub: HubApi, options: PubSubOptions = {}): Handler {
  const authorize = options.authorize ?? defaultAuthorize;
  const allowClientPublish = options.allowClientPublish ?? true;

  /**
   * Runs `act` if the hook allows it. A synchronous hook keeps everything synchronous, so replies and
   * publishes keep the order the client sent them in; an async hook may reorder around other messages.
   */
  function ifAllowed(ctx: HandlerContext, topic: string, action: TopicAction, act: () => void | Promise<unknown>, id?: unknown): void | Promise<void> {
    const deny = () => ctx.send(errorEnvelope('forbidden', `${action} not allowed on this topic`, { topic, ...(id !== undefined ? { id } : {}) }));
    if (action === 'publish' && !allowClientPublish) {
      return ctx.send(errorEnvelope('forbidden', 'clients may not publish on this server', { topic, ...(id !== undefined ? { id } : {}) }));
    }
    const verdict = authorize(ctx, topic, action);
    if (typeof verdict === 'boolean') return verdict ? settled(act()) : deny();
    return verdict.then((ok) => (ok ? settled(act()) : deny()));
  }

  return {
    formatPublish(topic, offset, body) {
      // body is `{"data":…,"from":"…"}` from a publish below (here or on another node): splice, no re-parse.
      if (typeof body !== 'string' || !body.startsWith('{')) return body;
      const rest = body.slice(1);
      return `{"type":"message","topic":${JSON.stringify(topic)},"offset":${offset}${rest === '}' ? '' : ','}${rest}`;
    },
    formatReset(topic, { offset, epoch }) {
      return JSON.stringify({ type: 'subscribed', topic, offset, epoch, recovered: false, reset: true });
    },
    formatPresence(event, topic, member) {
      return JSON.stringify({ type: event, topic, ...member });
    },
    onTokenExpiring(ctx, inMs) {
      ctx.send(`{"type":"expiring","in":${Math.max(0, Math.round(inMs))}}`);
    },
    onMessage(ctx, raw) {
      if (typeof raw !== 'string') return ctx.send(errorEnvelope('binary-unsupported', 'send JSON text frames'));
      let msg: ClientMessage;
      try {
        msg = JSON.parse(raw) as ClientMessage;
      } catch {
        return ctx.send(errorEnvelope('bad-json', 'message is not valid JSON'));
      }
      if (typeof msg !== 'object' || msg === null || Array.isArray(msg)) return ctx.send(errorEnvelope('bad-message', 'message must be a JSON object'));
      const { type, topic } = msg;
      if (type === 'ping') return ctx.send('{"type":"pong"}');
      if (type === 'refresh') {
        const { token } = msg;
        if (typeof token !== 'string' || token.length === 0) return ctx.send(errorEnvelope('bad-message', 'refresh needs a token field (a JWT)'));
        return ctx.refreshToken(token).then(
          ({ expiresAt }) => ctx.send(`{"type":"refreshed","exp":${expiresAt === undefined ? null : Math.floor(expiresAt / 1000)}}`),
          (error: unknown) => ctx.send(errorEnvelope('bad-token', error instanceof Error ? error.message : 'the token was refused')),
        );
      }
      if (type !== 'subscribe' && type !== 'unsubscribe' && type !== 'publish' && type !== 'presence') {
        return ctx.send(errorEnvelope('unknown-type', 'type must be subscribe, unsubscribe, publish, presence, refresh or ping', { got: typeof type === 'string' ? type : null }));
      }
      if (!isValidTopic(topic)) return ctx.send(errorEnvelope('bad-topic', 'topic must be a string of 1 to 256 characters without control characters'));
      switch (type) {
        case 'subscribe': {
          const { since } = msg;
          if (since !== undefined && !isPosition(since)) return ctx.send(errorEnvelope('bad-message', 'since must be {"offset": an integer ≥ 0, "epoch": a string}', { topic }));
          return ifAllowed(ctx, topic, 'subscribe', () =>
            ctx.subscribe(topic, {
              since,
              // The answer goes out before the replay of what the client missed.
              beforeReplay: ({ outcome, position, recovered }) => {
                if (outcome === 'subscription-limit') return ctx.send(errorEnvelope(outcome, 'this connection holds as many topics as the server allows', { topic }));
                if (outcome === 'topic-limit') return ctx.send(errorEnvelope(outcome, 'the server holds as many topics as it allows', { topic }));
                if (outcome === 'unavailable') return ctx.send(errorEnvelope(outcome, 'the message store cannot be reached now; subscribe again', { topic }));
                if (outcome === 'closed') return;
                const answer: Record<string, unknown> = { type: 'subscribed', topic, offset: position.offset, epoch: position.epoch };
                if (since) answer.recovered = recovered;
                ctx.send(JSON.stringify(answer));
              },
            }),
          );
        }
        case 'presence':
          return ifAllowed(ctx, topic, 'presence', () =>
            hub.presence(topic).then(
              (presence) => ctx.send(JSON.stringify({ type: 'presence', ...presence })),
              () => ctx.send(errorEnvelope('unavailable', 'the presence store cannot be read now; try again', { topic })),
            ),
          );
        case 'unsubscribe':
          ctx.unsubscribe(topic);
          return ctx.send(JSON.stringify({ type: 'unsubscribed', topic }));
        case 'publish': {
          const { data, id } = msg;
          if (!('data' in msg)) return ctx.send(errorEnvelope('bad-message', 'publish needs a data field', id !== undefined ? { id } : {}));
          return ifAllowed(ctx, topic, 'publish', () => {
            // What travels (to local subscribers and over the backplane) is the body; each node
            // wraps it with the offset in formatPublish.
            return hub.publish(topic, JSON.stringify({ data, from: ctx.id })).then(
              ({ offset, epoch, delivered }) => {
                if (id !== undefined) ctx.send(JSON.stringify({ type: 'published', id, topic, offset, epoch, delivered }));
              },
              () => ctx.send(errorEnvelope('unavailable', 'the message store cannot take publications now; try again', { topic, ...(id !== undefined ? { id } : {}) })),
            );
          }, id);
        }
      }
    },
  };
}
