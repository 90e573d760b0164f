/**
 * `knobs inspect PATH`: what a weights file or model directory holds. A safetensors file without
 * --stats is listed from its header alone (no tensor data is read, fast at any size); a model
 * directory, or --stats, goes through the library's `inspect` (src/inspect/), which reads each
 * tensor in turn for its statistics.
 *
 * A header can list millions of tensors, so the command never builds the whole report: it makes
 * two passes over the validated header (sizes and totals, then rows) and writes its output in
 * chunks of rows. `inspectReport` still builds the report object for library callers.
 */
import { stat } from 'node:fs/promises';
import { UsageError } from '../errors.js';
import { type SafetensorsHeader, readSafetensorsHeader } from '../formats/safetensors.js';
import { type InspectedTensor, type ModelInspection, inspect } from '../inspect/inspect.js';
import { checkRegularFile } from '../io/regular-file.js';
import { Progress } from '../train/progress.js';
import { type CliIO, type Command, parse } from './command.js';
import { isAdapterDir } from '../finetune/adapter.js';

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
  for (const e of header.entries.values())
    // Each entry is built fresh for this iteration, so its shape array is ours to hand on.
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
  yield* chunked(
    mapIter(tensors, ({ name, dtype, shape, bytes }) => JSON.stringify({ name, dtype, shape, bytes })),
    ',',
  );
  if (metadata === null) {
    yield '],"metadata":null}\n';
    return;
  }
  yield '],"metadata":{';
  yield* chunked(
    mapIter(metadata, ([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`),
    ',',
  );
  yield '}}\n';
}

const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/;
const CONTROLS = new RegExp(CONTROL.source, 'g');

/**
 * Names and metadata come from untrusted files: show control characters escaped, never raw.
 * Most text has none, and then the text itself is returned (a replace would copy every line).
 */
export function printable(text: string): string {
  if (!CONTROL.test(text)) return text;
  return text.replace(CONTROLS, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** 1234567 → "1,234,567" (what toLocaleString('en-US') prints, without its cost per row). */
export function grouped(n: number): string {
  return String(n).replace(/\B(?=(\d{3})+(?!\d))/g, ',');
}

/** Dimensions the table shows of one shape; --json has them all. */
const TABLE_DIMS = 16;

export function shapeCell(shape: number[]): string {
  if (shape.length <= TABLE_DIMS) return `[${shape.join(', ')}]`;
  return `[${shape.slice(0, TABLE_DIMS).join(', ')}, … (${grouped(shape.length)} dimensions)]`;
}

export function bytesHuman(n: number): string {
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
  countParameters(view, (t) =>
    cells(t).forEach((c, i) => {
      widths[i] = Math.max(widths[i]!, c.length);
    }),
  );
  const line = (row: string[]) =>
    row
      .map((c, i) => (i === 3 ? c.padStart(widths[i]!) : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  yield `${printable(r.path)}: ${r.format}, ${bytesHuman(r.fileBytes)} (header ${grouped(r.headerBytes)} bytes)\n`;
  yield `tensors: ${grouped(r.tensorCount)}  parameters: ${grouped(r.parameterCount)}  data: ${bytesHuman(r.tensorBytes)}\n`;
  if (r.tensorCount > 0) {
    yield `\n${line(head)}\n`;
    yield* mapIter(
      chunked(
        mapIter(tensors, (t) => line(cells(t))),
        '\n',
      ),
      (chunk) => `${chunk}\n`,
    );
  }
  if (metadata) {
    yield '\nmetadata:\n';
    yield* mapIter(
      chunked(
        mapIter(metadata, ([k, v]) => `  ${printable(k)}: ${printable(v)}`),
        '\n',
      ),
      (chunk) => `${chunk}\n`,
    );
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

/** Data above this size gets a progress line on stderr while it is read. */
const PROGRESS_BYTES = 64 << 20;

/**
 * Progress of reading a model tensor by tensor (inspect --stats, diff), in MiB, on stderr; silent
 * for models under PROGRESS_BYTES. `report` goes to the library's onProgress; `finish` ends the line.
 */
export function byteProgress(
  label: string,
  io: CliIO,
): { report: (doneBytes: number, totalBytes: number, tensor: string) => void; finish: () => void } {
  let progress: Progress | null = null;
  let tensors = 0;
  let current = '';
  return {
    report(doneBytes, totalBytes, tensor) {
      // Called per chunk of a tensor too: count each tensor once.
      if (tensor !== current) tensors++;
      current = tensor;
      if (totalBytes < PROGRESS_BYTES) return;
      progress ??= new Progress({
        total: Math.ceil(totalBytes / 2 ** 20),
        label: `${label} MiB`,
        write: io.stderr,
        isTTY: io.isTTY,
        plainEvery: 20,
      });
      // Whole MiB done, rounded down — but the total is rounded up, so the end must say so itself.
      const doneMiB = doneBytes === totalBytes ? Math.ceil(totalBytes / 2 ** 20) : Math.floor(doneBytes / 2 ** 20);
      progress.update(doneMiB, { tensors: String(tensors) });
    },
    finish: () => progress?.finish(),
  };
}

/** Eight levels, lowest to highest; an empty bin is a space. */
const BARS = '▁▂▃▄▅▆▇█';

/** The histogram as one character per bin, scaled to its fullest bin. */
export function sparkline(counts: readonly number[]): string {
  const top = Math.max(...counts);
  if (top === 0) return '';
  return counts
    .map((c) => (c === 0 ? ' ' : BARS[Math.min(BARS.length - 1, Math.floor((c / top) * BARS.length))]!))
    .join('');
}

/** A statistic in a table cell: 4 significant digits, exponent when very large or small. */
export function numberCell(v: number | null | undefined): string {
  if (v === null || v === undefined) return '-';
  if (!Number.isFinite(v)) return String(v);
  if (v === 0) return '0';
  const a = Math.abs(v);
  return a >= 1e5 || a < 1e-3 ? v.toExponential(3) : String(Number(v.toPrecision(4)));
}

function statCells(t: InspectedTensor): string[] {
  const s = t.stats;
  if (!s) return ['-', '-', '-', '-', '-', '-', '(not decoded)'];
  return [
    numberCell(s.mean),
    numberCell(s.std),
    numberCell(s.min),
    numberCell(s.max),
    numberCell(s.zero_fraction),
    String(s.nonfinite),
    `|${sparkline(t.histogram ?? [])}|`,
  ];
}

/** Lines of cells, each column padded to its widest cell; numeric columns right-aligned. */
export function table(head: string[], rows: string[][], rightAligned: ReadonlySet<number>): string {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (row: string[]): string =>
    row
      .map((c, i) => (rightAligned.has(i) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [head, ...rows].map(line).join('\n') + '\n';
}

/** {"q8_0": 60, "f32": 26, "requantized_from": {"q4_K": 40}} → "q8_0 60, f32 26 (re-quantized to q8_0: q4_K 40)". */
function loadedKinds(weights: Record<string, number | Record<string, number>>): string {
  const list = (o: Record<string, number>): string =>
    Object.entries(o)
      .map(([k, n]) => `${k} ${n}`)
      .join(', ');
  const { requantized_from: from, ...kinds } = weights;
  const plain = list(kinds as Record<string, number>);
  return from && typeof from === 'object' ? `${plain} (re-quantized to q8_0: ${list(from)})` : plain;
}

/** The human report of a model (directory, or --stats). */
export function formatModelInspection(r: ModelInspection): string {
  const stats = r.tensors.some((t) => t.stats !== undefined);
  const what = [r.format, r.architecture, r.files.length > 1 ? `${r.files.length} files` : null]
    .filter((x) => x !== null)
    .join(', ');
  let out = `${printable(r.path)}: ${what}\n`;
  out += `tensors: ${grouped(r.tensorCount)}  parameters: ${grouped(r.parameterCount)}  data: ${bytesHuman(r.tensorBytes)}\n`;
  if (r.loaded) out += `loaded as: ${loadedKinds(r.loaded.weights)}  in memory: ${bytesHuman(r.loaded.bytes)}\n`;
  if (r.tensorCount > 0) {
    const head = [
      'name',
      'dtype',
      'shape',
      'bytes',
      ...(stats ? ['mean', 'std', 'min', 'max', 'zeros', 'nonfinite', 'histogram'] : []),
    ];
    const rows = r.tensors.map((t) => [
      printable(t.name),
      t.dtype,
      shapeCell(t.shape),
      grouped(t.bytes),
      ...(stats ? statCells(t) : []),
    ]);
    out += `\n${table(head, rows, new Set(stats ? [3, 4, 5, 6, 7, 8, 9] : [3]))}`;
  }
  if (r.metadata) {
    out += '\nmetadata:\n';
    for (const [k, v] of Object.entries(r.metadata)) out += `  ${printable(k)}: ${printable(v)}\n`;
  }
  return out;
}

export const inspectCommand: Command = {
  name: 'inspect',
  summary: 'list the tensors of a weights file or model directory, with --stats their statistics',
  help: `Usage: knobs inspect PATH [--stats] [--json]

PATH is a safetensors file, a Hugging Face model directory (model.safetensors or shards listed by
model.safetensors.index.json), a knobs run directory, a GGUF file (llama, qwen2 and gpt2 tensors
under their Hugging Face names and shapes, quantized ones dequantized for --stats; a 'loaded as'
line says which stay quantized when the model is loaded, and their bytes), or a PEFT
adapter directory (its config, and per module the rank, alpha, scaling, shapes and
‖ΔW‖ = ‖scaling·B·A‖). Lists the format, the architecture
(config.json's model_type), every tensor (canonical Hugging Face name, dtype, shape, bytes), the
parameter count and the metadata, from the headers alone. An invalid file is reported with the
rule it breaks (see docs/formats.md) and exit code 1.

  --stats  also read every tensor, a chunk at a time (a few MiB of memory at any size), for its
           mean, std, min, max, fraction of zeros, count of NaN/Inf and a 16-bin histogram
           (progress on stderr for models over 64 MiB)
  --json   one JSON object (docs/inspect.md)

Examples:
  knobs inspect model.safetensors --json
  knobs inspect ./gpt2 --stats`,
  async run(argv, io) {
    const { values, positionals } = parse(argv, { json: { type: 'boolean' }, stats: { type: 'boolean' } }, 'inspect');
    if (positionals.length !== 1) {
      throw new UsageError(`inspect takes one PATH, got ${positionals.length}; see 'knobs inspect --help'`);
    }
    const path = positionals[0]!;
    const json = values.json === true;
    const stats = values.stats === true;
    const isDirectory = await stat(path).then(
      (st) => st.isDirectory(),
      () => false,
    );
    if (isDirectory && isAdapterDir(path)) {
      // Loaded on demand: adapter views reach load/ and everything it opens; loaded up front they pushed
      // inspect's peak over the header-memory bound (test/slow/header-bounds.ts: 10× the header, not 8×).
      await (await import('./adapter-views.js')).inspectAdapter(path, json, io);
      return 0;
    }
    if (!stats && !isDirectory && !path.toLowerCase().endsWith('.gguf')) {
      const view = await readView(path);
      for (const chunk of json ? jsonChunks(view) : textChunks(view)) io.stdout(chunk);
      return 0;
    }
    const progress = byteProgress('inspect', io);
    const report = await inspect(path, { stats, onProgress: progress.report });
    progress.finish();
    io.stdout(json ? `${JSON.stringify(report)}\n` : formatModelInspection(report));
    return 0;
  },
};
