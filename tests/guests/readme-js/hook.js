import { writeCert, runCommand } from 'tlsward:hook/host@0.1.0';

// A failed host call throws an Error whose payload is the hook-error: { tag, val }.
const reason = (e) => e?.payload?.val ?? String(e);

export function deploy(bundle, settings) {
  const cfg = Object.fromEntries(settings);
  if (!cfg.path) throw 'path is required';
  const reload = (cfg.reload ?? '/usr/bin/systemctl reload myservice').split(' ');
  try {
    writeCert('pem-fullchain', cfg.path, 0o644, undefined);
  } catch (e) {
    throw `writing ${cfg.path}: ${reason(e)}`;
  }
  let out;
  try {
    out = runCommand(reload);
  } catch (e) {
    throw `running ${reload[0]}: ${reason(e)}`;
  }
  if (out.exitCode !== 0) throw `${reload[0]} exited with ${out.exitCode}: ${out.stderr.trim()}`;
  return `wrote ${cfg.path}; ran ${reload.join(' ')}`;
}
