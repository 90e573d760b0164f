/** `knobs convert MODEL --format gguf|safetensors --dtype T --out PATH`: weights into another format. */
import { UsageError } from '../errors.js';
import { CONVERT_FORMATS, type ConvertFormat, convertModel } from '../load/convert.js';
import { type Command, emit, parse } from './command.js';

export const convertCommand: Command = {
  name: 'convert',
  summary: 'convert a model to GGUF (f32/f16/bf16/q8_0/q4_0) or safetensors (f32/f16/bf16)',
  help: `Usage: knobs convert MODEL --format gguf|safetensors [--dtype T] --out PATH [--json]

Writes MODEL's weights in another format, as llama.cpp's convert_hf_to_gguf.py (and, for q4_0,
llama-quantize) would; the output appears whole or not at all, and never replaces a file.

  MODEL                 a Hugging Face model directory, a knobs run directory, a .gguf file
                        (llama, qwen2, gpt2) or a .safetensors file
  --format gguf         from a directory: --dtype f32, f16 (default), bf16, q8_0 or q4_0
  --format safetensors  from a .gguf or a directory: a Hugging Face directory (dequantized);
                        from a .safetensors file: that file with its float tensors as --dtype;
                        --dtype f32 (default), f16 or bf16
  --out PATH            the file (GGUF, .safetensors) or directory to write; must not exist
  --json                one object: {"input", "out", "format", "dtype", "tensors"}

docs/gguf.md lists where knobs' GGUF files differ from llama.cpp's on purpose.

Examples:
  knobs convert runs/tiny-llama --format gguf --dtype q8_0 --out tiny-q8_0.gguf
  knobs convert tiny-q8_0.gguf --format safetensors --dtype f32 --out tiny-hf`,
  async run(argv, io) {
    const { values, positionals } = parse(
      argv,
      { format: { type: 'string' }, dtype: { type: 'string' }, out: { type: 'string' }, json: { type: 'boolean' } },
      'convert',
    );
    if (positionals.length !== 1)
      throw new UsageError(`convert takes one MODEL, got ${positionals.length}; see 'knobs convert --help'`);
    const format = values.format;
    if (typeof format !== 'string' || !(CONVERT_FORMATS as readonly string[]).includes(format))
      throw new UsageError(`convert needs --format ${CONVERT_FORMATS.join(' or ')}; see 'knobs convert --help'`);
    if (typeof values.out !== 'string') throw new UsageError("convert needs --out PATH; see 'knobs convert --help'");
    const dtype = typeof values.dtype === 'string' ? values.dtype : format === 'gguf' ? 'f16' : 'f32';
    const result = await convertModel({
      input: positionals[0]!,
      format: format as ConvertFormat,
      dtype,
      out: values.out,
    });
    emit(io, values.json === true, result, () => {
      const counts = Object.entries(result.tensors)
        .map(([type, n]) => `${n} ${type}`)
        .join(', ');
      return `wrote ${result.out} (${result.format}, ${result.dtype}): ${counts}\n`;
    });
    return 0;
  },
};
