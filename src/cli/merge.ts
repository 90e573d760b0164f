/** `knobs merge BASE ADAPTER --out DIR`: folds a LoRA adapter into its base and writes a normal model directory. */
import { UsageError } from '../errors.js';
import { mergeAdapter } from '../finetune/merge.js';
import { saveModelDirectory } from '../finetune/model-dir.js';
import { openLanguageModel } from '../load/language-model.js';
import { HF_OUT_TYPES, type HfOutType } from '../models/gguf/export.js';
import { type Command, emit, parse } from './command.js';
import { quantizeFlag } from './flags.js';
import { mergeToGguf } from '../load/merge-gguf.js';

export const mergeCommand: Command = {
  name: 'merge',
  summary: 'merge a LoRA adapter into its base and write a model directory',
  help: `Usage: knobs merge BASE ADAPTER --out DIR|FILE.gguf [--format hf|gguf] [--dtype f32|f16|bf16]
                   [--quantize q8_0|q4_0] [--allow-base-mismatch] [--json]

Loads BASE (a run or Hugging Face model directory, or a .gguf file) with the PEFT adapter
directory ADAPTER, adds scaling · B·A into each targeted weight (transposed for GPT-2's Conv1D)
and writes DIR as a Hugging Face model directory: config.json, generation_config.json,
model.safetensors and the tokenizer files. DIR must not exist; it appears whole or not at all.

A quantized base (q8_0/q4_0 layers: --quantize, or a GGUF loaded quantized) is checked against the
adapter's digest as quantized; its targeted layers are dequantized, merged and written as --dtype
(default f16), and stderr says so. Its other quantized layers are written dequantized to f32 (a
model directory holds no quantized blocks); 'knobs convert DIR --format gguf --dtype q8_0'
quantizes the result again. The other tensors keep their type.

--format gguf (the default when --out ends in .gguf) writes one GGUF file instead: each untargeted
q8_0/q4_0 layer keeps its blocks byte for byte, the targeted ones are written as --dtype (default
f16), the other tensors as they are held (f32). From a GGUF BASE (f32, f16, bf16, q8_0, q4_0
tensors; loaded as 'knobs tune' loads it, so the adapter's base digest is checked against the
file's blocks) every untargeted tensor keeps the file's type and values, and the file's metadata
(tokenizer, chat template) is kept key for key.

  --out DIR                where to write the merged model (required)
  --format F               hf (a model directory, the default) or gguf (one file)
  --dtype T                the merged (targeted) weights' type: f32, f16 or bf16 (default: f32,
                           f16 on a quantized base)
  --quantize TYPE          quantize BASE's linear layers first, as 'knobs tune --quantize' did
                           (an adapter tuned on that quantized base then finds its digest)
  --allow-base-mismatch    merge an adapter that records another base's weight digest
  --json                   print {"out","modules","parameters","dtype","dequantized"} on one line
                           (GGUF output: {"out","format","dtype","base","modules","parameters",
                           "dequantized","kept","tensors"}, counts per type)

Example:
  knobs merge runs/tiny runs/tiny-lora --out runs/tiny-merged
  knobs merge runs/tiny runs/tiny-qlora --quantize q8_0 --out runs/tiny-qmerged
  knobs merge runs/tiny runs/tiny-qlora --quantize q8_0 --out tiny-qmerged.gguf
  knobs merge model.q8_0.gguf runs/gguf-lora --out merged.gguf
  knobs diff runs/tiny/model.safetensors runs/tiny-merged/model.safetensors`,
  async run(argv, io) {
    const { values, positionals } = parse(
      argv,
      {
        out: { type: 'string' },
        dtype: { type: 'string' },
        quantize: { type: 'string' },
        format: { type: 'string' },
        'allow-base-mismatch': { type: 'boolean' },
        json: { type: 'boolean' },
      },
      'merge',
    );
    if (positionals.length !== 2)
      throw new UsageError(
        `merge takes BASE and ADAPTER, got ${positionals.length} argument(s); see 'knobs merge --help'`,
      );
    const out = values.out as string | undefined;
    if (out === undefined) throw new UsageError("merge needs --out DIR; see 'knobs merge --help'");
    const dtype = values.dtype as string | undefined;
    if (dtype !== undefined && !(HF_OUT_TYPES as readonly string[]).includes(dtype))
      throw new UsageError(`--dtype must be one of ${HF_OUT_TYPES.join(', ')}, got '${dtype}'`);
    const quantize = quantizeFlag(values.quantize);
    const [base, adapterDir] = positionals as [string, string];
    const format = values.format ?? (out.toLowerCase().endsWith('.gguf') ? 'gguf' : 'hf');
    if (format !== 'hf' && format !== 'gguf')
      throw new UsageError(`--format must be hf or gguf, got '${String(format)}'`);
    if (format === 'gguf') {
      const result = await mergeToGguf(base, adapterDir, out, {
        ...quantize,
        dtype: (dtype as HfOutType | undefined) ?? 'f16',
        allowBaseMismatch: values['allow-base-mismatch'] === true,
      });
      const list = (counts: Record<string, number>): string =>
        Object.entries(counts)
          .map(([t, n]) => `${n} ${t}`)
          .join(', ');
      const decoded = list(result.dequantized);
      io.stderr(
        `knobs merge: targeted layers (${result.modules.length}) written as ${result.dtype}` +
          `${decoded ? `, dequantized from ${decoded}` : ''}; ` +
          `untargeted quantized layers kept their blocks (${list(result.kept) || 'none'}); every other tensor keeps ` +
          `${result.base === 'gguf' ? `the type it has in ${base}` : 'its type'}` +
          `${result.saved.length > 0 ? `; the adapter's trained copies of ${result.saved.length} base tensors replace them (as ${result.dtype} where the file held blocks)` : ''}\n`,
      );
      emit(
        io,
        values.json === true,
        result,
        () => `merged ${result.modules.length} modules${copies(result.saved)} of ${adapterDir} into ${out}\n`,
      );
      return 0;
    }
    const { model, tokenizer } = await openLanguageModel(base, quantize);
    const { adapter, merged, dequantized } = await mergeAdapter(model, adapterDir, {
      allowBaseMismatch: values['allow-base-mismatch'] === true,
    });
    const type: HfOutType = (dtype as HfOutType | undefined) ?? (dequantized.length > 0 ? 'f16' : 'f32');
    await saveModelDirectory(out, model, tokenizer, { dtypes: new Map(merged.map((name) => [name, type])) });
    if (dequantized.length > 0) {
      const kinds = (targeted: boolean): string => {
        const counts = new Map<string, number>();
        for (const d of dequantized.filter((d) => d.targeted === targeted))
          counts.set(d.type, (counts.get(d.type) ?? 0) + 1);
        return [...counts].map(([t, n]) => `${n} ${t}`).join(', ') || 'none';
      };
      io.stderr(
        `knobs merge: the base is quantized; targeted layers (${kinds(true)}) were dequantized, merged and written as ${type}; ` +
          `the other quantized layers (${kinds(false)}) were written dequantized as f32 (a model directory holds no quantized blocks; ` +
          `'knobs convert ${out} --format gguf --dtype q8_0' quantizes again); every other tensor keeps its type\n`,
      );
    }
    const result = {
      out,
      modules: [...adapter.layers.keys()],
      saved: adapter.saved.map((s) => s.target.name),
      parameters: adapter.numParameters(),
      dtype: type,
      dequantized: dequantized.map((d) => ({ module: d.path, type: d.type, targeted: d.targeted })),
    };
    emit(
      io,
      values.json === true,
      result,
      () => `merged ${result.modules.length} modules${copies(result.saved)} of ${adapterDir} into ${out} (${type})\n`,
    );
    return 0;
  },
};

/** " and the adapter's trained copies of N base tensors" when it has any (modules_to_save, bias). */
function copies(saved: readonly string[]): string {
  return saved.length === 0 ? '' : ` and the adapter's trained copies of ${saved.length} base tensors`;
}
