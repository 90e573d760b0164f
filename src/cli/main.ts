/**
 * The `knobs` command line: picks a command, runs it, and turns errors into exit codes. Importing
 * this module runs nothing (tests call `main()` in process); the executable is ./bin.ts.
 */
import { KnobsError, UsageError } from '../errors.js';
import type { CliIO, Command } from './command.js';
import { chooseThreads } from './threads.js';

/**
 * A command as the table knows it: its name and one-line summary, for `knobs --help`, and how to
 * load the module that runs it. Commands load on demand, so `knobs verify` does not pay for the
 * server, the native backend or SQLite: starting them all took 0.375 s before any work.
 * test/cli-main.test.ts checks that each summary here is the command's own.
 */
export interface CommandEntry {
  name: string;
  summary: string;
  load: () => Promise<Command>;
}

// One entry per command, in the order `knobs --help` lists them.
export const COMMANDS: readonly CommandEntry[] = [
  {
    name: 'info',
    summary: 'show backends, libraries, ISA and threads',
    load: async () => (await import('./info.js')).infoCommand,
  },
  {
    name: 'inspect',
    summary: 'list the tensors of a weights file or model directory, with --stats their statistics',
    load: async () => (await import('./inspect.js')).inspectCommand,
  },
  {
    name: 'diff',
    summary: 'compare two models tensor by tensor, in any formats knobs reads',
    load: async () => (await import('./diff.js')).diffCommand,
  },
  {
    name: 'convert',
    summary: 'convert a model to GGUF (f32/f16/bf16/q8_0/q4_0) or safetensors (f32/f16/bf16)',
    load: async () => (await import('./convert.js')).convertCommand,
  },
  {
    name: 'train',
    summary: 'train a recipe (MLP/CNN on IDX images, GPT/Llama/Qwen2 on text) into a run directory',
    load: async () => (await import('./train.js')).trainCommand,
  },
  {
    name: 'tune',
    summary: 'fine-tune a base model with a tune recipe (LoRA adapter in PEFT layout, or frozen parameters)',
    load: async () => (await import('./tune.js')).tuneCommand,
  },
  {
    name: 'merge',
    summary: 'merge a LoRA adapter into its base and write a model directory',
    load: async () => (await import('./merge.js')).mergeCommand,
  },
  {
    name: 'extract-lora',
    summary: 'build a LoRA adapter from a fine-tuned model (truncated SVD of the weight difference)',
    load: async () => (await import('./extract-lora.js')).extractLoraCommand,
  },
  {
    name: 'eval',
    summary: "score a run's model on its test or validation data, or a Hugging Face model on a text",
    load: async () => (await import('./eval.js')).evalCommand,
  },
  {
    name: 'generate',
    summary: "continue a prompt with a run's language model (KV cache, streamed)",
    load: async () => (await import('./generate.js')).generateCommand,
  },
  {
    name: 'tokenize',
    summary: 'encode text with a tokenizer.json (or a model directory holding one, or a .gguf)',
    load: async () => (await import('./tokenize.js')).tokenizeCommand,
  },
  {
    name: 'tokenizer',
    summary: 'tokenizer tools: train a byte-level BPE tokenizer.json',
    load: async () => (await import('./tokenizer.js')).tokenizerCommand,
  },
  {
    name: 'signing-key',
    summary: 'create a key pair for signing releases (ECDSA P-256 by default)',
    load: async () => (await import('./signing-key.js')).signingKeyCommand,
  },
  {
    name: 'release',
    summary: 'copy a model into a signed bundle (model card + OpenSSF model-signing signature)',
    load: async () => (await import('./release.js')).releaseCommand,
  },
  {
    name: 'verify',
    summary: 'check a signed model (knobs release or OpenSSF model-signing) against a public key',
    load: async () => (await import('./verify.js')).verifyCommand,
  },
  {
    name: 'seal',
    summary: 'encrypt a model directory at rest (AES-256-GCM), rotate its master key, or make a key',
    load: async () => (await import('./seal.js')).sealCommand,
  },
  {
    name: 'serve',
    summary: 'serve a language model over an authenticated OpenAI-compatible HTTP API',
    load: async () => (await import('./serve.js')).serveCommand,
  },
  {
    name: 'keys',
    summary: "create, list and revoke the API keys of 'knobs serve'",
    load: async () => (await import('./keys.js')).keysCommand,
  },
];

function usage(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length));
  return [
    'Usage: knobs COMMAND [ARGS] [--flags]',
    '',
    'Commands:',
    ...COMMANDS.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    '',
    'Global flags: --threads N (or KNOBS_THREADS) sets worker threads; KNOBS_BACKEND=js|native picks the backend.',
    "Run 'knobs COMMAND --help' for a command's flags and an example.",
    '',
  ].join('\n');
}

export async function main(rawArgv: string[], io: CliIO): Promise<number> {
  let argv: string[];
  try {
    // The global --threads (or KNOBS_THREADS), checked and capped at the CPUs available, goes to
    // the native backend through KNOBS_THREADS, which it reads when it loads (on the first op).
    const choice = chooseThreads(rawArgv, process.env);
    for (const message of choice.warnings) io.stderr(`knobs: warning: ${message}\n`);
    if (choice.threads !== undefined) process.env.KNOBS_THREADS = String(choice.threads);
    argv = choice.argv;
  } catch (err) {
    io.stderr(`knobs: error [E_USAGE]: ${(err as Error).message}\n`);
    return 2;
  }
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    io.stdout(usage());
    return name === undefined ? 2 : 0;
  }
  if (name === '--version') {
    const { KNOBS_VERSION } = await import('./info.js');
    io.stdout(`${KNOBS_VERSION}\n`);
    return 0;
  }
  const command = COMMANDS.find((c) => c.name === name);
  try {
    if (!command) throw new UsageError(`unknown command '${name}'; run 'knobs --help' to list commands`);
    const loaded = await command.load();
    if (rest.includes('--help') || rest.includes('-h')) {
      io.stdout(`${loaded.help}\n`);
      return 0;
    }
    return await loaded.run(rest, io);
  } catch (err) {
    if (err instanceof KnobsError) {
      io.stderr(`knobs: error [${err.code}]: ${err.message}\n`);
      return err.code === 'E_USAGE' ? 2 : 1;
    }
    io.stderr(`knobs: internal error: ${(err as Error).stack ?? String(err)}\n`);
    return 1;
  }
}

/** The process's own streams, for the executable. */
export function processIO(): CliIO {
  return {
    stdout: (t) => process.stdout.write(t),
    stderr: (t) => process.stderr.write(t),
    isTTY: process.stderr.isTTY === true,
  };
}
