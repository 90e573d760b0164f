/**
 * `knobs inspect FILE`: what a weights file holds, from its header alone (no tensor data is read).
 *
 * A header can list millions of tensors, so the command never builds the whole report: it makes
 * two passes over the validated header (sizes and totals, then rows) and writes its output in
 * chunks of rows. `inspectReport` still builds the report object for library callers.
 */
import { UsageError } from '../errors.js';
import { type SafetensorsHeader, readSafetensorsHeader } from '../formats/safetensors.js';
import { checkRegularFile } from '../io/regular-file.js';
import { type Command, parse } from './command.js';

export interface TensorRow {
  name: string;
  dtype: string;
  shape: number[];
  bytes: number;
}

/** A row as the passes over the header see it; `numel` is not part of the report. */
interface CountedRow extends TensorRow {
  numel: number;
}

/** Everything in the report but the per-tensor list and the metadata. */
interface Summary {
  format: 'safetensors';
  path: string;
  fileBytes: number;
  headerBytes: number;
  tensorCount: number;
  parameterCount: number;
  tensorBytes: number;
}

export interface InspectReport extends Summary {
  /** In file order. */
  tensors: TensorRow[];
  /** Built with Object.fromEntries, so a key like `__proto__` is an ordinary own property. */
  metadata: Record<string, string> | null;
}

/** A report whose rows are produced on demand (each iteration walks the header again). */
interface ReportView {
  summary: Summary;
  tensors: Iterable<CountedRow>;
  metadata: Iterable<[string, string]> | null;
}

/** The header as a report view; `parameterCount` is left for the first pass over the rows. */
async function readView(path: string): Promise<ReportView> {
  // A FIFO or a device would block the reader or never end: refuse it before reading.
  await checkRegularFile(path, 'safetensors file');
  const header = await readSafetensorsHeader(path);
  return {
    summary: {
      format: 'safetensors',
      path,
      fileBytes: header.fileSize,
      headerBytes: header.headerLength,
      tensorCount: header.entries.size,
      parameterCount: 0,
      tensorBytes: header.fileSize - header.dataStart,
    },
    tensors: { [Symbol.iterator]: () => rows(header) },
    metadata: header.metadata,
  };
}

/** Sums the parameters in a pass over the rows, also handing each row to `visit`. */
function countParameters(view: ReportView, visit: (t: CountedRow) => void = () => {}): void {
  let n = 0;
  for (const t of view.tensors) {
    n += t.numel;
    visit(t);
  }
  view.summary.parameterCount = n;
}

function* rows(header: SafetensorsHeader): Generator<CountedRow> {
  for (const e of header.entries.values()) // Each entry is built fresh for this iteration, so its shape array is ours to hand on.
    yield { name: e.name, dtype: e.dtype, shape: e.shape as number[], bytes: e.byteLength, numel: e.numel };
}

export async function inspectReport(path: string): Promise<InspectReport> {
  const view = await readView(path);
  const tensors: TensorRow[] = [];
  countParameters(view, ({ numel: _, ...row }) => tensors.push(row));
  return { ...view.summary, tensors, metadata: view.metadata ? Object.fromEntries(view.metadata) : null };
}

/** Rows per chunk of output: big enough to write rarely, small enough to hold. */
const ROWS_PER_CHUNK = 4096;

/** `lines` joined by `sep`, as chunks of up to ROWS_PER_CHUNK lines (concatenated, they are the whole join). */
function* chunked(lines: Iterable<string>, sep: string): Generator<string> {
  let batch: string[] = [];
  let first = true;
  for (const line of lines) {
    batch.push(line);
    if (batch.length === ROWS_PER_CHUNK) {
      yield `${first ? '' : sep}${batch.join(sep)}`;
      first = false;
      batch = [];
    }
  }
  if (batch.length > 0) yield `${first ? '' : sep}${batch.join(sep)}`;
}

function* mapIter<T, U>(items: Iterable<T>, f: (item: T) => U): Generator<U> {
  for (const item of items) yield f(item);
}

/** The report as one line of JSON, in chunks: the same text JSON.stringify(report) gives. */
function* jsonChunks(view: ReportView): Generator<string> {
  const { summary, tensors, metadata } = view;
  countParameters(view);
  yield `${JSON.stringify(summary).slice(0, -1)},"tensors":[`;
  yield* chunked(mapIter(tensors, ({ name, dtype, shape, bytes }) => JSON.stringify({ name, dtype, shape, bytes })), ',');
  if (metadata === null) {
    yield '],"metadata":null}\n';
    return;
  }
  yield '],"metadata":{';
  yield* chunked(mapIter(metadata, ([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`), ',');
  yield '}}\n';
}

const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/;
const CONTROLS = new RegExp(CONTROL.source, 'g');

/**
 * Names and metadata come from untrusted files: show control characters escaped, never raw.
 * Most text has none, and then the text itself is returned (a replace would copy every line).
 */
function printable(text: string): string {
  if (!CONTROL.test(text)) return text;
  return text.replace(CONTROLS, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** 1234567 → "1,234,567" (what toLocaleString('en-US') prints, without its cost per row). */
function grouped(n: number): string {
  return String(n).replace(/\B(?=(\d{3})+(?!\d))/g, ',');
}

/** Dimensions the table shows of one shape; --json has them all. */
const TABLE_DIMS = 16;

function shapeCell(shape: number[]): string {
  if (shape.length <= TABLE_DIMS) return `[${shape.join(', ')}]`;
  return `[${shape.slice(0, TABLE_DIMS).join(', ')}, … (${grouped(shape.length)} dimensions)]`;
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

/** The human table, in chunks. Column widths take one pass over the rows, the lines another. */
function* textChunks(view: ReportView): Generator<string> {
  const { summary: r, tensors, metadata } = view;
  const cells = (t: TensorRow) => [printable(t.name), t.dtype, shapeCell(t.shape), grouped(t.bytes)];
  const head = ['name', 'dtype', 'shape', 'bytes'];
  const widths = head.map((h) => h.length);
  countParameters(view, (t) => cells(t).forEach((c, i) => { widths[i] = Math.max(widths[i]!, c.length); }));
  const line = (row: string[]) => row.map((c, i) => (i === 3 ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join('  ').trimEnd();
  yield `${printable(r.path)}: ${r.format}, ${bytesHuman(r.fileBytes)} (header ${grouped(r.headerBytes)} bytes)\n`;
  yield `tensors: ${grouped(r.tensorCount)}  parameters: ${grouped(r.parameterCount)}  data: ${bytesHuman(r.tensorBytes)}\n`;
  if (r.tensorCount > 0) {
    yield `\n${line(head)}\n`;
    yield* mapIter(chunked(mapIter(tensors, (t) => line(cells(t))), '\n'), (chunk) => `${chunk}\n`);
  }
  if (metadata) {
    yield '\nmetadata:\n';
    yield* mapIter(chunked(mapIter(metadata, ([k, v]) => `  ${printable(k)}: ${printable(v)}`), '\n'), (chunk) => `${chunk}\n`);
  }
}

function viewOf(r: InspectReport): ReportView {
  const { tensors, metadata, ...summary } = r;
  const counted = tensors.map((t) => ({ ...t, numel: t.shape.reduce((a, b) => a * b, 1) }));
  return { summary, tensors: counted, metadata: metadata && Object.entries(metadata) };
}

export function formatInspect(r: InspectReport): string {
  return [...textChunks(viewOf(r))].join('');
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
    const view = await readView(positionals[0]!);
    for (const chunk of values.json === true ? jsonChunks(view) : textChunks(view)) io.stdout(chunk);
    return 0;
  },
};
