/**
 * `knobs diff A B`: what changed between two models, whatever their formats, through the
 * library's `diff` (src/inspect/diff.ts): per tensor and per layer, most-moved layers first.
 */
import { UsageError } from '../errors.js';
import { type ModelDiff, diff } from '../inspect/diff.js';
import { type Command, parse } from './command.js';
import { isAdapterDir } from '../finetune/adapter.js';
import { byteProgress, numberCell, printable, shapeCell, table } from './inspect.js';

export function formatDiff(d: ModelDiff): string {
  const sideText = (s: ModelDiff['a']): string =>
    `${printable(s.path)} (${[s.format, s.architecture].filter((x) => x !== null).join(', ')}, ${s.tensorCount} tensors)`;
  let out = `a: ${sideText(d.a)}\nb: ${sideText(d.b)}\n`;
  for (const note of d.notes) out += `note: ${note}\n`;
  const counts = new Map<string, number>();
  for (const t of d.tensors) counts.set(t.status, (counts.get(t.status) ?? 0) + 1);
  out += `${[...counts].map(([status, n]) => `${n} ${status}`).join(', ') || 'no tensors'} (atol ${d.atol})\n`;
  if (d.tensors.length === 0) return out;
  const shapeText = (t: ModelDiff['tensors'][number]): string => {
    if (t.status === 'reshaped') return `${shapeCell(t.shape_a!)} → ${shapeCell(t.shape_b!)}`;
    return shapeCell((t.shape_a ?? t.shape_b)!);
  };
  const rows = d.tensors.map((t) => [
    printable(t.name),
    t.status,
    shapeText(t),
    numberCell(t.rel_l2),
    numberCell(t.max_abs),
    numberCell(t.moved_fraction),
  ]);
  out += `\n${table(['name', 'status', 'shape', 'rel_l2', 'max_abs', 'moved'], rows, new Set([3, 4, 5]))}`;
  const layerRows = d.layers.map((l) => [
    l.layer === null ? '(outside layers)' : String(l.layer),
    String(l.tensors),
    String(l.changed),
    String(l.unmatched),
    numberCell(l.rel_l2),
    numberCell(l.max_abs),
    numberCell(l.moved_fraction),
  ]);
  out += `\nlayers, most moved first:\n${table(['layer', 'tensors', 'changed', 'unmatched', 'rel_l2', 'max_abs', 'moved'], layerRows, new Set([1, 2, 3, 4, 5, 6]))}`;
  return out;
}

export const diffCommand: Command = {
  name: 'diff',
  summary: 'compare two models tensor by tensor, in any formats knobs reads',
  help: `Usage: knobs diff A B [--atol X] [--json]

A and B are safetensors files, Hugging Face model directories, knobs run directories or GGUF
files, in any mix. Both are mapped to Hugging Face names and shapes (GPT-2's transformer. prefix
dropped; GGUF names mapped back, q/k un-permuted, values dequantized) and compared
tensor by tensor: status same | changed | added | removed | reshaped, rel_l2 = |a−b|/|a|, max_abs,
and moved, the fraction of elements with |a − b| > atol + 1e-6·|a|. Then a summary per layer
(h.{i}., model.layers.{i}.), most moved first. Models of different architectures: the notes say
what does not match, and the tensors both hold are compared.

When B is a PEFT adapter directory (adapter_config.json), A is its base model directory and the
report is the adapter's effective change per targeted module: ‖ΔW‖ = ‖scaling·B·A‖, ‖W‖ and
their ratio, largest first.

  --atol X  absolute tolerance of "moved" (default 0)
  --json    {"a", "b", "atol", "notes", "tensors": [...], "layers": [...]} (docs/inspect.md)

Example:
  knobs diff ./base ./runs/finetune-20250101T120000Z --atol 1e-4
  knobs diff runs/tiny runs/tiny-lora`,
  async run(argv, io) {
    const { values, positionals } = parse(argv, { json: { type: 'boolean' }, atol: { type: 'string' } }, 'diff');
    if (positionals.length !== 2)
      throw new UsageError(`diff takes two paths A B, got ${positionals.length}; see 'knobs diff --help'`);
    const atolText = values.atol as string | undefined;
    const atol = atolText === undefined ? 0 : Number(atolText);
    if (atolText !== undefined && (atolText.trim() === '' || !Number.isFinite(atol) || atol < 0)) {
      throw new UsageError(`--atol needs a number ≥ 0, got ${JSON.stringify(atolText)}`);
    }
    if (isAdapterDir(positionals[1]!)) {
      await (
        await import('./adapter-views.js')
      ).diffAdapter(positionals[0]!, positionals[1]!, values.json === true, io);
      return 0;
    }
    const progress = byteProgress('diff', io);
    const result = await diff(positionals[0]!, positionals[1]!, { atol, onProgress: progress.report });
    progress.finish();
    io.stdout(values.json === true ? `${JSON.stringify(result)}\n` : formatDiff(result));
    return 0;
  },
};
