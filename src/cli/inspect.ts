/** `knobs inspect FILE`: what a weights file holds, from its header alone (no tensor data is read). */
import { UsageError } from '../errors.js';
import { readSafetensorsHeader } from '../formats/safetensors.js';
import { checkRegularFile } from '../io/regular-file.js';
import { type Command, emit, parse } from './command.js';

export interface InspectReport {
  format: 'safetensors';
  path: string;
  fileBytes: number;
  headerBytes: number;
  tensorCount: number;
  parameterCount: number;
  tensorBytes: number;
  /** In file order. */
  tensors: Array<{ name: string; dtype: string; shape: number[]; bytes: number }>;
  /** Built with Object.fromEntries, so a key like `__proto__` is an ordinary own property. */
  metadata: Record<string, string> | null;
}

export async function inspectReport(path: string): Promise<InspectReport> {
  // A FIFO or a device would block the reader or never end: refuse it before reading.
  await checkRegularFile(path, 'safetensors file');
  const header = await readSafetensorsHeader(path);
  const tensors = [...header.entries.values()].map((e) => ({ name: e.name, dtype: e.dtype, shape: [...e.shape], bytes: e.byteLength }));
  let parameterCount = 0;
  for (const e of header.entries.values()) parameterCount += e.numel;
  return {
    format: 'safetensors',
    path,
    fileBytes: header.fileSize,
    headerBytes: header.headerLength,
    tensorCount: tensors.length,
    parameterCount,
    tensorBytes: header.fileSize - header.dataStart,
    tensors,
    metadata: header.metadata ? Object.fromEntries(header.metadata) : null,
  };
}

/** Names and metadata come from untrusted files: show control characters escaped, never raw. */
function printable(text: string): string {
  return text.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

function bytesHuman(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${n} B` : `${v.toFixed(1)} ${units[u]}`;
}

export function formatInspect(r: InspectReport): string {
  const rows = r.tensors.map((t) => [printable(t.name), t.dtype, `[${t.shape.join(', ')}]`, t.bytes.toLocaleString('en-US')]);
  const head = ['name', 'dtype', 'shape', 'bytes'];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 3 ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join('  ').trimEnd();
  const out = [
    `${printable(r.path)}: ${r.format}, ${bytesHuman(r.fileBytes)} (header ${r.headerBytes.toLocaleString('en-US')} bytes)`,
    `tensors: ${r.tensorCount.toLocaleString('en-US')}  parameters: ${r.parameterCount.toLocaleString('en-US')}  data: ${bytesHuman(r.tensorBytes)}`,
  ];
  if (rows.length > 0) out.push('', line(head), ...rows.map(line));
  if (r.metadata) {
    out.push('', 'metadata:', ...Object.entries(r.metadata).map(([k, v]) => `  ${printable(k)}: ${printable(v)}`));
  }
  return `${out.join('\n')}\n`;
}

export const inspectCommand: Command = {
  name: 'inspect',
  summary: 'list the tensors, dtypes, shapes and metadata of a weights file',
  help: `Usage: knobs inspect FILE [--json]

Reads only the header of a safetensors file, validates it, and lists every tensor (name, dtype,
shape, bytes) in file order, the parameter count and the metadata. An invalid file is reported
with the rule it breaks (see docs/formats.md) and exit code 1.

Example:
  knobs inspect model.safetensors --json`,
  async run(argv, io) {
    const { values, positionals } = parse(argv, { json: { type: 'boolean' } }, 'inspect');
    if (positionals.length !== 1) {
      throw new UsageError(`inspect takes one FILE, got ${positionals.length}; see 'knobs inspect --help'`);
    }
    const report = await inspectReport(positionals[0]!);
    emit(io, values.json === true, report, () => formatInspect(report));
    return 0;
  },
};
