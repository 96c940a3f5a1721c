// The demo page served at `/` (`--demo`; by default with --handler pubsub): a live room over the
// pubsub protocol, with live counters from /admission and /stats. Plain HTML and a little script, no framework. Under the echo handler it says so and
// works as an echo console.
export const demoPage = /* html */ `<!doctype html>
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
<div id="status">connecting…</div>
<script type="module">
const $ = (id) => document.getElementById(id);
const topic = new URLSearchParams(location.search).get('room') || 'lobby';
const name = 'guest-' + Math.random().toString(36).slice(2, 6);
let ws, mode = 'unknown', opened = false, retryTimer;

function show(text, who) {
  const li = document.createElement('li');
  if (who) { const s = document.createElement('span'); s.className = 'who'; s.textContent = who; li.append(s); }
  li.append(document.createTextNode(text));
  $('messages').append(li);
  $('messages').scrollTop = $('messages').scrollHeight;
}
function banner(kind, text) { $('banner').className = kind || ''; $('banner').textContent = text || ''; }
function ready(on) { $('text').disabled = !on; $('send').disabled = !on; }

function connect() {
  clearTimeout(retryTimer);
  opened = false;
  ws = new WebSocket((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws');
  ws.onopen = () => {
    opened = true;
    banner();
    $('status').textContent = 'connected as ' + name + ' in room ' + topic;
    ws.send(JSON.stringify({ type: 'subscribe', topic }));
  };
  ws.onmessage = (event) => {
    const text = String(event.data);
    if (mode === 'unknown') {
      mode = text.startsWith('Server received: ') ? 'echo' : 'pubsub';
      if (mode === 'echo') banner('info', 'This server runs the echo handler: you see your own messages echoed. Start it with --handler pubsub for a shared room.');
      ready(true);
      if (mode === 'echo') return;
    }
    if (mode === 'echo') return show(text, 'server');
    let msg;
    try { msg = JSON.parse(text); } catch { return show(text, 'server'); }
    if (msg.type === 'message') show(String(msg.data && msg.data.text), (msg.data && msg.data.name) || msg.from);
    else if (msg.type === 'error') show('error: ' + msg.message, 'server');
  };
  ws.onclose = async (event) => {
    ready(false);
    if (!opened) {
      // A browser cannot read the status of a refused handshake: ask the server why.
      try {
        const res = await fetch('/admission', { cache: 'no-store' });
        const body = await res.json();
        const retry = Number(res.headers.get('Retry-After') || 2);
        if (res.status === 503 && body.reason === 'capacity') {
          banner('full', 'The server is full (503): ' + body.live + ' of ' + body.limit + ' connections are in use. Retrying in ' + retry + ' s.');
        } else if (res.status === 503) {
          banner('full', 'The server is shutting down (503). Retrying in ' + retry + ' s.');
        } else {
          banner('full', 'Could not connect (the server refused the WebSocket). Retrying in ' + retry + ' s.');
        }
        $('status').textContent = 'not connected';
        retryTimer = setTimeout(connect, retry * 1000);
      } catch {
        banner('full', 'The server cannot be reached. Retrying in 3 s.');
        retryTimer = setTimeout(connect, 3000);
      }
      return;
    }
    $('status').textContent = 'disconnected (' + event.code + '), reconnecting…';
    retryTimer = setTimeout(connect, 1000);
  };
}

$('form').onsubmit = (event) => {
  event.preventDefault();
  const text = $('text').value.trim();
  if (!text || !ws || ws.readyState !== 1) return;
  ws.send(mode === 'echo' ? text : JSON.stringify({ type: 'publish', topic, data: { text, name } }));
  $('text').value = '';
};

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
connect();
</script>
</body>
</html>
`;
