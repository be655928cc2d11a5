// The checks browsercheck page runs in a tab of the edge's page: each
// returns {check, ok, saw}. Paths are those of browsercheck origin.
(async () => {
  if (document.readyState !== 'complete') {
    await new Promise(res => addEventListener('load', res, {once: true}));
  }
  const out = [];
  const hex = b => [...new Uint8Array(b)].map(x => x.toString(16).padStart(2, '0')).join('');
  const sha = async b => hex(await crypto.subtle.digest('SHA-256', b));
  const proto = url => (performance.getEntriesByName(url).pop() || {}).nextHopProtocol;
  const nav = performance.getEntriesByType('navigation')[0];
  out.push({check: 'page', ok: nav.responseStatus === 200, saw: `${nav.responseStatus} over ${nav.nextHopProtocol}`});
  const mib = 64;
  try {
    const t = performance.now();
    const r = await fetch(`/big?mib=${mib}`, {cache: 'no-store'});
    const b = await r.arrayBuffer();
    const ok = r.status === 200 && b.byteLength === mib << 20 && await sha(b) === r.headers.get('X-Sha256');
    out.push({check: `download ${mib} MiB`, ok, saw: `${r.status}, ${b.byteLength} bytes, sha256 ${ok ? 'matches' : 'differs'}, ${Math.round(performance.now() - t)} ms over ${proto(r.url)}`});
  } catch (e) { out.push({check: `download ${mib} MiB`, ok: false, saw: String(e)}); }
  try {
    const body = new Uint8Array(mib << 20);
    for (let i = 0; i < body.length; i++) body[i] = (i * 13) & 0xff;
    const want = await sha(body);
    const t = performance.now();
    const r = await fetch('/upload', {method: 'POST', body});
    const got = await r.json();
    const ok = r.status === 200 && got.bytes === body.length && got.sha256 === want;
    out.push({check: `upload ${mib} MiB`, ok, saw: `${r.status}, origin read ${got.bytes} bytes, sha256 ${got.sha256 === want ? 'matches' : 'differs'}, ${Math.round(performance.now() - t)} ms over ${proto(r.url)}`});
  } catch (e) { out.push({check: `upload ${mib} MiB`, ok: false, saw: String(e)}); }
  out.push(await new Promise(res => {
    const ws = new WebSocket(`wss://${location.host}/ws`);
    ws.binaryType = 'arraybuffer';
    const msg = new Uint8Array(1 << 20).fill(7);
    let got = 0;
    const done = (ok, saw) => { clearTimeout(timer); ws.close(); res({check: 'WebSocket echo of 1 MiB', ok, saw}); };
    const timer = setTimeout(() => done(false, `timeout after ${got} bytes`), 30000);
    ws.onopen = () => ws.send(msg);
    ws.onmessage = m => { got += m.data.byteLength; if (got >= msg.length) done(got === msg.length, `${got} bytes back`); };
    ws.onerror = () => done(false, `error after ${got} bytes`);
  }));
  for (const cl of ['1', '0']) {
    const check = `origin drops the connection mid-body (${cl === '1' ? 'Content-Length' : 'chunked'})`;
    try {
      const r = await fetch(`/cut?cl=${cl}`, {cache: 'no-store'});
      const b = await r.arrayBuffer();
      out.push({check, ok: false, saw: `${r.status} with ${b.byteLength} bytes taken as complete`});
    } catch (e) { out.push({check, ok: true, saw: `the fetch failed (${e})`}); }
  }
  return out;
})()
