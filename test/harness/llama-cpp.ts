/**
 * llama.cpp as a judge of GGUF files: node-llama-cpp 3.21.1's prebuilt CPU llama.cpp, in process,
 * one thread, F32 KV cache, no flash attention, greedy decoding.
 */
import type { Llama as LlamaCpp } from 'node-llama-cpp';

async function openInLlamaCpp(llama: LlamaCpp, path: string) {
  const model = await llama.loadModel({ modelPath: path });
  const context = await model.createContext({
    threads: 1,
    contextSize: 64,
    flashAttention: false,
    experimentalKvCacheKeyType: 'F32',
    experimentalKvCacheValueType: 'F32',
  });
  return { model, context };
}

/** Opens `path` in llama.cpp for `use`, and disposes of it after. */
export async function withLlamaCpp<T>(
  llama: LlamaCpp,
  path: string,
  use: (opened: Awaited<ReturnType<typeof openInLlamaCpp>>) => Promise<T>,
): Promise<T> {
  const opened = await openInLlamaCpp(llama, path);
  try {
    return await use(opened);
  } finally {
    await opened.context.dispose();
    await opened.model.dispose();
  }
}

/** llama.cpp's greedy continuation of `prompt` (up to `n` tokens) with each step's next-token probabilities. */
export function llamaCppGreedy(llama: LlamaCpp, path: string, prompt: number[], n: number) {
  return withLlamaCpp(llama, path, async ({ context }) => {
    const tokens: number[] = [];
    const probabilities: Map<number, number>[] = [];
    const steps = context
      .getSequence()
      .evaluateWithMetadata(prompt as never[], { probabilities: true }, { temperature: 0 });
    for await (const step of steps) {
      tokens.push(step.token as unknown as number);
      probabilities.push(step.probabilities as unknown as Map<number, number>);
      if (tokens.length >= n) break;
    }
    return { tokens, probabilities };
  });
}

/** Softmax of row `row` of logits [rows, V], in f64. */
export function softmaxRow(logits: Float32Array, row: number, V: number): Float64Array {
  const x = logits.subarray(row * V, (row + 1) * V);
  const max = Math.max(...x);
  const e = Float64Array.from(x, (v) => Math.exp(v - max));
  const sum = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / sum);
}
