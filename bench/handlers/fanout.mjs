// hubbub handler for the fan-out benchmark (bench/fanout.mjs, issue 4).
// Every connection subscribes to `bench` when it opens. A text message `fanout <payload>` publishes
// <payload> (the rest of the message, unchanged) to `bench` with hub.publish, which encodes it once
// for all subscribers. Anything else is ignored.
//
//   node dist/node.js --handler bench/handlers/fanout.mjs …
const TOPIC = 'bench';
const PREFIX = 'fanout ';

export default function fanoutHandler(hub) {
  return {
    onOpen(ctx) {
      ctx.subscribe(TOPIC);
    },
    onMessage(_ctx, data) {
      if (typeof data === 'string' && data.startsWith(PREFIX)) hub.publish(TOPIC, data.slice(PREFIX.length));
    },
  };
}
