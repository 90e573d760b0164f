/**
 * Child-process probe: reads one safetensors file the way `knobs inspect` does and prints one JSON
 * line {outcome, baselineKiB, peakKiB, ms}. Peak is the process's high-water RSS; baseline is that
 * mark after the modules are loaded, before the file is touched. Run it in a fresh process per
 * file so the peaks of different files do not mix.
 *
 *   node dist/test/harness/measure-header.js FILE [header|inspect|inspect-json]
 */
import { readFileSync } from 'node:fs';
import { Writable } from 'node:stream';
import { KnobsError } from '../../src/errors.js';
import { readSafetensorsHeader } from '../../src/formats/safetensors.js';
import { inspectCommand } from '../../src/cli/inspect.js';

/**
 * High-water RSS in KiB. On Linux, from /proc (VmHWM belongs to this program's address space);
 * getrusage's maxRSS would do elsewhere, but Linux carries it over from the parent across exec.
 */
function peakKiB(): number {
  try {
    const m = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync('/proc/self/status', 'utf8'));
    if (m) return Number(m[1]);
  } catch {
    // not Linux
  }
  return process.resourceUsage().maxRSS;
}

/** Discards output but counts it, so the measured path does all of its formatting work. */
let written = 0;
const sink = new Writable({
  write(chunk: Buffer, _enc, done) {
    written += chunk.byteLength;
    done();
  },
});

async function probe(path: string, mode: string): Promise<void> {
  const baselineKiB = peakKiB();
  const start = performance.now();
  let outcome = 'ok';
  let entries = -1;
  try {
    if (mode === 'header') {
      const header = await readSafetensorsHeader(path);
      entries = header.entries.size + (header.metadata?.size ?? 0);
    } else {
      const io = {
        stdout: (t: string) => {
          sink.write(t);
        },
        stderr: () => {},
        isTTY: false,
      };
      await inspectCommand.run(mode === 'inspect-json' ? [path, '--json'] : [path], io);
    }
  } catch (err) {
    outcome =
      err instanceof KnobsError ? String(err.details['rule'] ?? err.code) : `crash: ${String(err).slice(0, 200)}`;
  }
  const ms = performance.now() - start;
  process.stdout.write(
    `${JSON.stringify({ outcome, entries, written, baselineKiB, peakKiB: peakKiB(), ms: Math.round(ms) })}\n`,
  );
}

// `npm test` loads every file under dist/test/, this one too, without arguments: then it does nothing.
const [path, mode = 'header'] = process.argv.slice(2);
if (path) await probe(path, mode);
