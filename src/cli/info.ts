/** `knobs info`: which backends, libraries and threads this process would use. */
import { backends, getBackend } from '../backends/dispatch.js';
import { type Command, emit, parse } from './command.js';
import { availableParallelism, cpus } from 'node:os';

export const infoCommand: Command = {
  name: 'info',
  summary: 'show backends, libraries, ISA and threads',
  help: `Usage: knobs info [--json]

Prints the version, the current backend, every available backend with its libraries and
threads, the machine's CPU, and V8's garbage collector mode: "single-threaded" when node runs with
--single-threaded-gc (the knobs executable does: background GC threads slow the compute pool down),
else "concurrent".

Example:
  knobs info --json`,
  async run(argv, io) {
    const { values } = parse(argv, { json: { type: 'boolean' } }, 'info');
    const report = {
      version: KNOBS_VERSION,
      node: process.version,
      backend: getBackend().name,
      backends: backends().map((name) => getBackend(name).describe()),
      cpu: { model: cpus()[0]?.model ?? 'unknown', cores: availableParallelism(), arch: process.arch },
      gc: process.execArgv.includes('--single-threaded-gc') ? 'single-threaded' : 'concurrent',
    };
    emit(io, values.json === true, report, () =>
      [
        `knobs ${report.version} (node ${report.node})`,
        `current backend: ${report.backend}`,
        ...report.backends.map(
          (b) =>
            `  ${String(b.name)}: ${Object.entries(b)
              .filter(([k]) => k !== 'name')
              .map(([k, v]) => `${k}=${Array.isArray(v) ? v.join(',') : String(v)}`)
              .join(' ')}`,
        ),
        `cpu: ${report.cpu.model} (${report.cpu.cores} cores, ${report.cpu.arch})`,
        `gc: ${report.gc} (V8)`,
        '',
      ].join('\n'),
    );
    return 0;
  },
};

export const KNOBS_VERSION = '0.1.0';
