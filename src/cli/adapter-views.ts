/**
 * `knobs inspect ADAPTER_DIR` and `knobs diff BASE ADAPTER_DIR`: the text and JSON views of a PEFT
 * adapter (src/finetune/adapter-info.ts). inspect.ts and diff.ts hand adapter directories here.
 */
import { adapterEffect, describeAdapter } from '../finetune/adapter-info.js';
import { openLanguageModel } from '../load/language-model.js';
import type { CliIO } from './command.js';
import { numberCell, printable, table } from './inspect.js';

/** True for a directory holding adapter_config.json. */
export async function inspectAdapter(dir: string, json: boolean, io: CliIO): Promise<void> {
  const info = await describeAdapter(dir);
  if (json) return void io.stdout(`${JSON.stringify(info)}\n`);
  const c = info.config;
  let out = `${printable(dir)}: PEFT LoRA adapter, ${info.modules.length} modules, ${info.parameters} parameters (${info.bytes} bytes)\n`;
  out += `r ${c.r}  lora_alpha ${c.lora_alpha}  use_rslora ${c.use_rslora}  lora_dropout ${c.lora_dropout}${c.use_dora ? '  use_dora true' : ''}\n`;
  out += `target_modules ${JSON.stringify(c.target_modules)}\n`;
  if (Object.keys(c.rank_pattern).length > 0) out += `rank_pattern ${JSON.stringify(c.rank_pattern)}\n`;
  if (Object.keys(c.alpha_pattern).length > 0) out += `alpha_pattern ${JSON.stringify(c.alpha_pattern)}\n`;
  if (c.modules_to_save !== null || c.bias !== 'none')
    out += `modules_to_save ${JSON.stringify(c.modules_to_save)}  bias ${c.bias}\n`;
  out += `base ${printable(c.base_model_name_or_path ?? '(not recorded)')}  digest ${info.base_digest ?? '(none: not written by knobs)'}\n\n`;
  const rows = info.modules.map((m) => [
    printable(m.module),
    String(m.r),
    numberCell(m.alpha),
    numberCell(m.scaling),
    `${m.in_features} → ${m.out_features}`,
    String(m.parameters),
    numberCell(m.delta_norm),
  ]);
  out += table(['module', 'r', 'alpha', 'scaling', 'in → out', 'params', '‖ΔW‖'], rows, new Set([1, 2, 3, 5, 6]));
  if (info.saved.length > 0) {
    const saved = info.saved.map((s) => [
      printable(s.tensor),
      s.shape.join('×'),
      String(s.parameters),
      numberCell(s.norm),
    ]);
    out += `\ntrained copies of base tensors (modules_to_save, bias): ${info.saved.length}\n\n`;
    out += table(['tensor', 'shape', 'params', '‖T‖'], saved, new Set([2, 3]));
  }
  io.stdout(out);
}

export async function diffAdapter(base: string, dir: string, json: boolean, io: CliIO): Promise<void> {
  const { model } = await openLanguageModel(base);
  const effects = (await adapterEffect(model, await describeAdapter(dir))).sort((a, b) => b.rel_change - a.rel_change);
  if (json) return void io.stdout(`${JSON.stringify({ base, adapter: dir, modules: effects })}\n`);
  const rows = effects.map((e) => [
    printable(e.module),
    numberCell(e.delta_norm),
    numberCell(e.weight_norm),
    numberCell(e.rel_change),
  ]);
  io.stdout(
    `effective change of ${printable(dir)} on ${printable(base)}, per targeted module and trained tensor (largest first):\n\n${table(['module', '‖ΔW‖', '‖W‖', 'rel'], rows, new Set([1, 2, 3]))}`,
  );
}
