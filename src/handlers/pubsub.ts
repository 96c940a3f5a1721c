// The built-in JSON topic protocol (`--handler pubsub`). Runtime-free.
//
// client → server                                       server → client
//   {"type":"subscribe","topic":"room"}                   {"type":"subscribed","topic":"room","seq":12}
//   {"type":"unsubscribe","topic":"room"}                 {"type":"unsubscribed","topic":"room"}
//   {"type":"publish","topic":"room","data":…,"id":7}     {"type":"message","topic":"room","seq":13,"data":…,"from":"4"}
//                                                         {"type":"published","id":7,"topic":"room","seq":13,"delivered":3}
//   {"type":"ping"}                                       {"type":"pong"}
//   anything malformed, or a subscribe over a cap          {"type":"error","code":"bad-json"|…|"subscription-limit"|"topic-limit","message":…}
//
// `seq` counts the messages published on a topic: a subscriber that sees 13 after 11 knows it
// missed one (the `drop` slow-consumer policy). A malformed message never closes the socket.
import type { Handler, HandlerContext, HubApi } from '../contracts.ts';
import { isValidTopic } from '../delivery/topics.ts';

export type TopicAction = 'subscribe' | 'publish';

export interface PubSubOptions {
  /**
   * Decides whether a connection may subscribe to or publish on a topic.
   * @default topics starting with `$` are reserved for the server; everything else is allowed
   */
  authorize?(ctx: HandlerContext, topic: string, action: TopicAction): boolean | Promise<boolean>;
}

export type PubSubErrorCode = 'bad-json' | 'bad-message' | 'unknown-type' | 'bad-topic' | 'forbidden' | 'binary-unsupported' | 'subscription-limit' | 'topic-limit';

const defaultAuthorize = (_ctx: HandlerContext, topic: string) => !topic.startsWith('$');

function errorEnvelope(code: PubSubErrorCode, message: string, extra: Record<string, unknown> = {}): string {
  return JSON.stringify({ type: 'error', code, message, ...extra });
}

interface ClientMessage {
  type?: unknown;
  topic?: unknown;
  data?: unknown;
  id?: unknown;
}

export function createPubSubHandler(hub: HubApi, options: PubSubOptions = {}): Handler {
  const authorize = options.authorize ?? defaultAuthorize;

  /**
   * Runs `act` if the hook allows it. A synchronous hook keeps everything synchronous, so replies and
   * publishes keep the order the client sent them in; an async hook may reorder around other messages.
   */
  function ifAllowed(ctx: HandlerContext, topic: string, action: TopicAction, act: () => void): void | Promise<void> {
    const deny = () => ctx.send(errorEnvelope('forbidden', `${action} not allowed on this topic`, { topic }));
    const verdict = authorize(ctx, topic, action);
    if (typeof verdict === 'boolean') return verdict ? act() : deny();
    return verdict.then((ok) => (ok ? act() : deny()));
  }

  return {
    formatPublish(topic, seq, body) {
      // body is `{"data":…,"from":"…"}` from a publish below (here or on another node): splice, no re-parse.
      if (typeof body !== 'string' || !body.startsWith('{')) return body;
      const rest = body.slice(1);
      return `{"type":"message","topic":${JSON.stringify(topic)},"seq":${seq}${rest === '}' ? '' : ','}${rest}`;
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
      if (type !== 'subscribe' && type !== 'unsubscribe' && type !== 'publish') {
        return ctx.send(errorEnvelope('unknown-type', 'type must be subscribe, unsubscribe, publish or ping', { got: typeof type === 'string' ? type : null }));
      }
      if (!isValidTopic(topic)) return ctx.send(errorEnvelope('bad-topic', 'topic must be a string of 1 to 256 characters without control characters'));
      switch (type) {
        case 'subscribe':
          return ifAllowed(ctx, topic, 'subscribe', () => {
            const outcome = ctx.trySubscribe(topic);
            if (outcome === 'subscription-limit') return ctx.send(errorEnvelope(outcome, 'this connection holds as many topics as the server allows', { topic }));
            if (outcome === 'topic-limit') return ctx.send(errorEnvelope(outcome, 'the server holds as many topics as it allows', { topic }));
            ctx.send(JSON.stringify({ type: 'subscribed', topic, seq: hub.sequence(topic) }));
          });
        case 'unsubscribe':
          ctx.unsubscribe(topic);
          return ctx.send(JSON.stringify({ type: 'unsubscribed', topic }));
        case 'publish': {
          if (!('data' in msg)) return ctx.send(errorEnvelope('bad-message', 'publish needs a data field'));
          const { data, id } = msg;
          return ifAllowed(ctx, topic, 'publish', () => {
            // What travels (to local subscribers and over the backplane) is the body; each node
            // wraps it with its own sequence number in formatPublish.
            const delivered = hub.publish(topic, JSON.stringify({ data, from: ctx.id }));
            if (id !== undefined) ctx.send(JSON.stringify({ type: 'published', id, topic, seq: hub.sequence(topic), delivered }));
          });
        }
      }
    },
  };
}
