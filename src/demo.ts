// The demo page served at `/` (`--demo`; by default with --handler pubsub): a live room built on the
// hubbub client (`/client.js`, src/client), with live counters from /admission and /stats. It shows
// the client at work: its state, each reconnect and its delay, a refused handshake and why
// (/admission), and after a reconnect what recovery did (the missed messages filled in, or the
// room's history lost). Plain HTML and a little script, no framework. Under the echo handler it is
// an echo console on a plain WebSocket.
import { clientModule } from './client/served.ts';

/** The page for this server: its handler's protocol, where its WebSocket is, and how it gets the client. */
export function demoPage(mode: 'pubsub' | 'echo', wsPath: string, clientServed: boolean): string {
  // Without /client.js (--serve-client false) the page carries the module itself.
  const clientSource = clientServed ? "'/client.js'" : `URL.createObjectURL(new Blob([${JSON.stringify(clientModule).replace(/</g, '\\u003c')}], { type: 'text/javascript' }))`;
  return /* html */ `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>hubbub demo</title>
<style>
  :root { font-family: system-ui, sans-serif; color: #1d2330; background: #f5f6f8; }
  body { max-width: 760px; margin: 2rem auto; padding: 0 1rem; }
  h1 { font-size: 1.4rem; margin: 0 0 .25rem; }
  .sub { color: #5b6475; margin: 0 0 1rem; }
  .counters { display: flex; gap: .75rem; margin-bottom: 1rem; }
  .counter { background: #fff; border: 1px solid #d9dde5; border-radius: 8px; padding: .5rem .9rem; min-width: 7rem; }
  .counter b { display: block; font-size: 1.3rem; }
  .counter span { color: #5b6475; font-size: .8rem; }
  #banner { display: none; padding: .75rem 1rem; border-radius: 8px; margin-bottom: 1rem; font-weight: 600; }
  #banner.full { display: block; background: #fde8e8; color: #8a1c1c; border: 1px solid #f3b4b4; }
  #banner.info { display: block; background: #eaf2ff; color: #1c3f8a; border: 1px solid #b4c9f3; }
  #messages { background: #fff; border: 1px solid #d9dde5; border-radius: 8px; height: 320px; overflow-y: auto; padding: .5rem .75rem; list-style: none; margin: 0 0 .75rem; }
  #messages li { padding: .2rem 0; border-bottom: 1px solid #f0f1f4; }
  #messages li .who { color: #5b6475; font-size: .8rem; margin-right: .4rem; }
  form { display: flex; gap: .5rem; }
  #text { flex: 1; padding: .55rem .7rem; border: 1px solid #c5cad4; border-radius: 6px; font-size: 1rem; }
  button { padding: .55rem 1.1rem; border: 0; border-radius: 6px; background: #2f5bd3; color: #fff; font-size: 1rem; cursor: pointer; }
  button:disabled { background: #9aa6c2; cursor: default; }
  #status { font-size: .85rem; color: #5b6475; margin-top: .5rem; }
  #state { display: inline-block; padding: 0 .45rem; border-radius: 4px; background: #e4e7ee; font-weight: 600; }
  #state[data-state=connected] { background: #dff3e4; color: #1b6b34; }
  #state[data-state=disconnected], #state[data-state=closed] { background: #fde8e8; color: #8a1c1c; }
  #messages li.note { color: #5b6475; font-style: italic; }
</style>
</head>
<body>
<h1>hubbub</h1>
<p class="sub">A live room on <code>/ws</code>. Open this page in two tabs and talk.</p>
<div class="counters">
  <div class="counter"><b id="live">–</b><span>connections</span></div>
  <div class="counter"><b id="limit">–</b><span>limit</span></div>
  <div class="counter"><b id="rate">–</b><span>messages/s</span></div>
</div>
<div id="banner" role="status"></div>
<ul id="messages" aria-live="polite"></ul>
<form id="form">
  <input id="text" autocomplete="off" placeholder="Say something" maxlength="2000" disabled>
  <button id="send" disabled>Send</button>
</form>
<div id="status"><span id="state" data-state="connecting">connecting</span> <span id="detail"></span></div>
<script type="module">
const $ = (id) => document.getElementById(id);
const topic = new URLSearchParams(location.search).get('room') || 'lobby';
const name = 'guest-' + Math.random().toString(36).slice(2, 6);
const wsUrl = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + ${JSON.stringify(wsPath)};

function show(text, who, offset) {
  const li = document.createElement('li');
  if (who) { const s = document.createElement('span'); s.className = 'who'; s.textContent = who; li.append(s); }
  else li.className = 'note';
  if (offset !== undefined) li.dataset.offset = String(offset);
  li.append(document.createTextNode(text));
  $('messages').append(li);
  $('messages').scrollTop = $('messages').scrollHeight;
}
function banner(kind, text) { $('banner').className = kind || ''; $('banner').textContent = text || ''; }
function ready(on) { $('text').disabled = !on; $('send').disabled = !on; }
function state(value, detail) { $('state').textContent = value; $('state').dataset.state = value; $('detail').textContent = detail || ''; }

if (${JSON.stringify(mode)} === 'echo') {
  banner('info', 'This server runs the echo handler: you see your own messages echoed. Start it with --handler pubsub for a shared room.');
  let ws;
  const open = () => {
    ws = new WebSocket(wsUrl);
    ws.onopen = () => { ready(true); state('connected', 'echo console'); };
    ws.onmessage = (event) => show(String(event.data), 'server');
    ws.onclose = (event) => { ready(false); state('disconnected', '(' + event.code + ') reconnecting in 2 s'); setTimeout(open, 2000); };
  };
  open();
  $('form').onsubmit = (event) => {
    event.preventDefault();
    const text = $('text').value.trim();
    if (text && ws.readyState === 1) { ws.send(text); $('text').value = ''; }
  };
} else {
  const { createClient } = await import(${clientSource});
  const client = createClient(wsUrl);
  window.hubbub = client; // for the console (and the browser test)
  let firstAnswer = true, lastOffset = 0, replayUntil = 0, replayFrom = 0;
  const recovered = () => show('reconnected: ' + (replayUntil - replayFrom) + ' missed message' + (replayUntil - replayFrom === 1 ? '' : 's') + ' recovered, in order');
  const sub = client.subscribe(topic, (data, meta) => {
    lastOffset = meta.offset;
    show(String(data && data.text), (data && data.name) || meta.from, meta.offset);
    if (meta.offset === replayUntil) recovered(); // the last of the replay: everything missed is on screen
  });
  sub.on('subscribed', (info) => {
    if (firstAnswer) { firstAnswer = false; lastOffset = info.position.offset; return; }
    // A resubscribe after a reconnect: what the server could give back.
    if (info.recovered) {
      replayFrom = lastOffset;
      replayUntil = info.position.offset;
      if (replayUntil === replayFrom) recovered();
    } else {
      replayUntil = 0;
      lastOffset = info.position.offset;
      show('reconnected, but the server no longer has what was said meanwhile (' + (info.reset ? 'its store was lost' : 'a new history, or too far behind') + '): some messages may be missing');
    }
  });
  sub.on('error', (error) => show('subscription refused: ' + error.message));
  client.on('state', (value) => {
    ready(value === 'connected');
    if (value === 'connected') { banner(); state(value, 'as ' + name + ' in room ' + topic + (client.stats.reconnects ? ' · reconnects: ' + client.stats.reconnects : '')); }
    else state(value);
  });
  client.on('reconnecting', ({ attempt, delay, code, refused }) => {
    const wait = (delay / 1000).toFixed(1) + ' s';
    if (refused && refused.body && refused.body.reason === 'capacity') {
      banner('full', 'The server is full (' + refused.status + '): ' + refused.body.live + ' of ' + refused.body.limit + ' connections are in use. Retrying in ' + wait + '.');
    } else if (refused) {
      banner('full', 'The server refused the connection (' + refused.status + (refused.body && refused.body.reason ? ', ' + refused.body.reason : '') + '). Retrying in ' + wait + '.');
    }
    state('disconnected', (code !== undefined ? 'closed (' + code + '), ' : '') + 'attempt ' + attempt + ' in ' + wait + ' (jittered backoff)');
  });
  client.on('closed', ({ code, reason }) => { banner('full', 'Disconnected for good (' + code + (reason ? ': ' + reason : '') + '). Reload to try again.'); state('closed'); });
  $('form').onsubmit = (event) => {
    event.preventDefault();
    const text = $('text').value.trim();
    if (!text) return;
    $('text').value = '';
    client.publish(topic, { text, name }).catch((error) => show('not sent (' + error.code + '): ' + text));
  };
}

// Live and limit come from /admission, which every client may ask; the message rate from /stats,
// which answers only the operator (a local client, or with the admin token): elsewhere it shows –.
let lastIn, lastAt;
async function poll() {
  try {
    const a = await (await fetch('/admission', { cache: 'no-store' })).json();
    $('live').textContent = a.live;
    $('limit').textContent = a.limit;
    const res = await fetch('/stats', { cache: 'no-store' });
    if (!res.ok) { $('rate').textContent = '–'; return; }
    const s = await res.json();
    const now = performance.now();
    if (lastIn !== undefined) $('rate').textContent = Math.max(0, Math.round((s.messagesIn + s.messagesOut - lastIn) / ((now - lastAt) / 1000)));
    lastIn = s.messagesIn + s.messagesOut; lastAt = now;
  } catch {}
}
poll();
setInterval(poll, 1000);
</script>
</body>
</html>
`;
}
