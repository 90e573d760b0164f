/**
 * Loaded with `node --import` into a child process that runs the real `knobs` command line: at
 * exit it writes the process's peak resident set in bytes to the file KNOBS_PEAK_RSS_FILE names.
 * Linux's VmHWM, not getrusage's maxRSS, which Linux carries over from the parent across exec.
 */
import { readFileSync, writeFileSync } from 'node:fs';

const out = process.env['KNOBS_PEAK_RSS_FILE'];
// `npm test` loads every file under dist/test/, this one too, without the variable: then it does nothing.
if (out) {
  process.on('exit', () => {
    const m = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync('/proc/self/status', 'utf8'));
    writeFileSync(out, String(m ? Number(m[1]) * 1024 : process.resourceUsage().maxRSS * 1024));
  });
}
