// An adversarial deploy hook for the sandbox tests: the `attack` setting picks one way of
// trying to get past the grant. See README.md for the attacks and what they return.
//
// How a host refusal reaches JavaScript (componentize-qjs 0.4.5, --sync): a host function
// whose WIT result is `err(hook-error)` throws an `Error` whose `payload` is the variant,
// `{ tag: "access-denied", val: "..." }`; the message itself is only "[object Object] (see
// error.payload)".
//
// The result of deploy:
// - Err("<tag>: <val> | <tag>: <val> ...") when the host refused every call the attack made;
// - Ok("... ESCAPED: <what> ...") when any call went through, so a test expecting Err fails;
// - Err("js-error: <name>: <message>") when the JS engine itself stopped the attack (out of
//   memory, stack overflow) or something other than the host threw.
// `loop` never returns: only the host's deadline ends it.

import * as host from 'tlsward:hook/host@0.1.0';

const MiB = 1024 * 1024;

// ASCII text as bytes (QuickJS has no TextEncoder).
function bytes(text) {
  const out = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i) & 0x7f;
  return out;
}

// `<tag>: <val>` for a host error; null for anything else.
function hostError(e) {
  const p = e !== null && typeof e === 'object' ? e.payload : undefined;
  if (p !== null && typeof p === 'object' && typeof p.tag === 'string') {
    return `${p.tag}: ${p.val}`;
  }
  return null;
}

// Makes each call in turn; a host error is recorded, a success is an escape, any other
// exception propagates (see `deploy`).
function attempt(calls) {
  const report = [];
  let escaped = false;
  for (const [what, call] of calls) {
    let outcome;
    try {
      outcome = call();
    } catch (e) {
      const refused = hostError(e);
      if (refused === null) throw e;
      report.push(refused);
      continue;
    }
    escaped = true;
    report.push(`ESCAPED: ${what}${outcome === undefined ? '' : ` (${outcome})`}`);
  }
  return { report, escaped };
}

function request(url) {
  return { method: 'GET', url, headers: [], body: new Uint8Array(0) };
}

const attacks = {
  'write-outside': () => [
    ['write-file /etc/tlsward-evil', () => host.writeFile('/etc/tlsward-evil', bytes('evil\n'), 0o600)],
    ['write-cert /tmp/evil.pem', () => host.writeCert('pem-fullchain', '/tmp/evil.pem', 0o644, null)],
  ],
  traversal: (s) => [
    [`write-file ${s.allowed_dir}/../escape.txt`,
      () => host.writeFile(`${s.allowed_dir}/../escape.txt`, bytes('evil\n'), 0o600)],
  ],
  'prefix-trick': (s) => [
    [`write-file ${s.allowed_dir}-sibling/x`,
      () => host.writeFile(`${s.allowed_dir}-sibling/x`, bytes('evil\n'), 0o600)],
  ],
  relative: () => [
    ['write-file relative.txt', () => host.writeFile('relative.txt', bytes('evil\n'), 0o600)],
  ],
  'setuid-mode': (s) => [
    [`write-file ${s.allowed_dir}/x mode 4755`,
      () => host.writeFile(`${s.allowed_dir}/x`, bytes('#!/bin/sh\nid\n'), 0o4755)],
    [`write-file ${s.allowed_dir}/x mode 666`,
      () => host.writeFile(`${s.allowed_dir}/x`, bytes('evil\n'), 0o666)],
  ],
  'key-world-readable': (s) => [
    [`write-cert pem-key ${s.allowed_dir}/k.pem mode 644`,
      () => host.writeCert('pem-key', `${s.allowed_dir}/k.pem`, 0o644, null)],
  ],
  command: () => [
    ['run-command /bin/sh -c id', () => JSON.stringify(host.runCommand(['/bin/sh', '-c', 'id']))],
    ['run-command /bin/true extra-arg', () => JSON.stringify(host.runCommand(['/bin/true', 'extra-arg']))],
  ],
  'http-host': (s) => [
    `https://127.0.0.2:${s.port}/`,
    `http://127.0.0.1:${s.port}/`,
    'https://example.invalid/',
  ].map((url) => [`http GET ${url}`, () => `status ${host.http(request(url)).status}`]),
  'key-convert': () => [
    ['convert pem-key', () => `${host.convert('pem-key', null).length} bytes`],
    ['convert pkcs12', () => `${host.convert('pkcs12', 'pw').length} bytes`],
  ],
};

// Attacks that do not go through the host: the engine or the host's limits must stop them.
const stoppers = {
  loop: () => {
    for (;;) { /* spin until the epoch deadline */ }
  },
  memory: () => {
    const hoard = [];
    for (let i = 0; ; i++) {
      const block = new Uint8Array(MiB);
      block[i % MiB] = 1;
      hoard.push(block);
    }
  },
  'log-flood': () => {
    const message = 'x'.repeat(1024);
    for (let i = 0; i < 100000; i++) host.log('info', message);
    return 'logged 100000 messages of 1 KiB';
  },
  // Texts and calls without end: one 100 KB log line, 3000 refused calls, a 1 MiB error.
  chatter: () => {
    host.log('info', 'l'.repeat(100000));
    for (let i = 0; i < 3000; i++) {
      try {
        host.writeFile('relative', bytes('x'), 0o600);
      } catch (e) {
        if (hostError(e) === null) throw e;
      }
    }
    throw 'e'.repeat(1 << 20);
  },
  'deep-recursion': () => {
    const down = (n) => down(n + 1) + 1;
    return `recursion returned ${down(0)}`;
  },
};

// Many legitimate writes, for tests that attack the host from outside while they run (a
// directory inside the grant swapped for a symbolic link): every outcome is counted and
// returned as JSON `{ ok, refused: { tag: count }, first }`, never judged here; the test
// looks at where the files landed. Settings: `dir` (inside the grant), `count`.
function writeMany(s) {
  const count = Number(s.count || '200');
  let ok = 0;
  let first = null;
  const refused = {};
  for (let i = 0; i < count; i++) {
    const key = i % 2 === 1;
    const file = key ? `${s.dir}/k${i % 40}.pem` : `${s.dir}/f${i % 40}`;
    try {
      if (key) host.writeCert('pem-key', file, 0o600, null);
      else host.writeFile(file, bytes(`file ${i}\n`), 0o644);
      ok++;
    } catch (e) {
      const r = hostError(e);
      if (r === null) throw e;
      const tag = r.slice(0, r.indexOf(':'));
      refused[tag] = (refused[tag] || 0) + 1;
      if (first === null) first = r;
    }
  }
  return JSON.stringify({ ok, refused, first });
}

function run(attack, s, bundle) {
  if (attack === 'write-many') return writeMany(s);
  if (Object.hasOwn(stoppers, attack)) return stoppers[attack]();
  if (!Object.hasOwn(attacks, attack)) throw `unknown attack ${JSON.stringify(attack)}`;
  const { report, escaped } = attempt(attacks[attack](s));
  let keyLeaked = false;
  if (attack === 'key-convert') {
    const key = bundle.keyPem;
    keyLeaked = typeof key !== 'string' || key.length > 0;
    report.push(keyLeaked ? `ESCAPED: bundle.keyPem holds ${String(key).length} chars` : 'bundle.keyPem: empty');
  }
  const text = report.join(' | ');
  if (escaped || keyLeaked) return text;
  throw text;
}

export function deploy(bundle, settings) {
  const s = Object.fromEntries(settings);
  try {
    return run(s.attack, s, bundle);
  } catch (e) {
    if (typeof e === 'string') throw e;
    const refused = hostError(e);
    if (refused !== null) throw refused;
    throw `js-error: ${e && e.name}: ${e && e.message}`;
  }
}
