/** The fields every single-layer LoRA-variant fixture case starts with (scripts/gen_dora_fixtures.py layer_header). */
export interface LayerCase {
  name: string;
  in: number;
  out: number;
  r: number;
  lora_alpha: number;
  conv1d: boolean;
  /** The base weight in its stored layout ([out, in]; [in, out] for a Conv1D). */
  weight: number[];
}
