#!/usr/bin/env node
/**
 * The fine-tuning economics of issue 11 on real data: for one base (a knobs run directory), every
 * method at the same token budget, each method's learning rate picked from the same recorded
 * 3-value sweep, then the forgetting of the winner measured on the base's own text.
 *
 *   node scripts/finetune_economics.mjs fortunes OUT.txt
 *       the new-domain text: every collection of Debian's `fortunes` and `fortunes-min` packages
 *       (/usr/share/games/fortunes/NAME without .dat/.u8, in name order), concatenated; prints
 *       the files, size and SHA-256
 *   node scripts/finetune_economics.mjs run --base DIR --name NAME --new TEXT --old TEXT
 *       --steps N [--lrs 1e-3,3e-3,1e-2] [--methods lora-attn,lora-all,lora-q8,last2,full,scratch]
 *       (also `lora-linear`: LoRA on every linear layer, the output head too, on a base whose head is
 *       its own layer — PEFT's "all-linear" leaves the head out)
 *       [--jobs J] [--eval-batches E] [--lora JSON] [--loraplus RATIO] [--seed S] --work DIR --out RESULTS.jsonl
 *       runs the sweep (J children at a time, one thread each) and appends rows to RESULTS.jsonl;
 *       --lora sets more of PEFT's LoraConfig fields for every LoRA method (e.g. '{"use_rslora":true}'),
 *       over LORA_FIXED's; r and target_modules are the experiment's and stay; --loraplus trains
 *       every LoRA method's lora_B at RATIO × the lr (optimizer.loraplus_lr_ratio); --seed (default 0)
 *       is the recipes' seed (LoRA's initial lora_A, the model of a scratch run, the batches' order);
 *       `lora-q8` is attention LoRA on the base quantized to q8_0 (recipe "quantize"); an empty
 *       --methods only finishes the sweeps RESULTS holds (winners' old-text loss)
 *   node scripts/finetune_economics.mjs table RESULTS.jsonl...
 *       the markdown table of the chosen runs
 *   node scripts/finetune_economics.mjs candidates RESULTS.jsonl...
 *       the markdown table of every LoRA setting the files hold: its loss at each learning rate, its
 *       best, and that against the best full fine-tune of the same base
 *   node scripts/finetune_economics.mjs eval MODEL [--adapter DIR] --data TEXT --batches E
 *       (a child) mean loss per byte on the first E batches of TEXT's validation split, as JSON
 *
 * Every run is a child `knobs tune` (or `knobs train` for scratch) under /usr/bin/time, whose
 * maximum resident set size is the peak memory column. The sweep's learning-rate grid is the same
 * for every method (--lrs); the winner is the lowest validation loss on the new text at the end.
 * Optimizer-state bytes are the size of the last checkpoint's optimizer.safetensors (AdamW: two f32
 * moments per trainable element, plus the safetensors header).
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { appendFileSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { basename, dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const KNOBS = join(ROOT, 'dist/src/cli/bin.js');
const FORTUNES_DIR = '/usr/share/games/fortunes';
const METHODS = ['lora-attn', 'lora-all', 'lora-q8', 'last2', 'full', 'scratch'];
/** Attention projections of both families: GPT-2 attn.c_attn / attn.c_proj, Llama q/k/v/o_proj (PEFT's re.fullmatch). */
const ATTENTION_REGEX = '(.*\\.)?(attn\\.c_attn|attn\\.c_proj|q_proj|k_proj|v_proj|o_proj)';
/** Every linear layer of a Llama, the output head included (PEFT's re.fullmatch). */
const LLAMA_LINEAR_REGEX = '(.*\\.)?(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj|lm_head)';
const VALIDATION_FRACTION = 0.05;
/** The LoRA settings every LoRA method starts from (PEFT's field names); --lora overrides all but r. */
const LORA_FIXED = { r: 8, lora_alpha: 16, lora_dropout: 0, use_rslora: false };
/**
 * Every child node runs with V8's garbage collector on the main thread: its background threads
 * compete with the compute thread on a busy machine (the CLI and the bench run the same way).
 */
const NODE_FLAGS = ['--single-threaded-gc'];

/** A path as the results show it: relative to where the script was started (the rows are committed). */
const shown = (path) => relative(process.cwd(), path) || '.';

function sha256(path) {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

async function fortunes([out]) {
  const names = readdirSync(FORTUNES_DIR)
    .filter((n) => !n.endsWith('.dat') && !n.endsWith('.u8'))
    .sort();
  writeFileSync(out, Buffer.concat(names.map((n) => readFileSync(join(FORTUNES_DIR, n)))));
  process.stdout.write(
    `${JSON.stringify({ files: names, dir: FORTUNES_DIR, bytes: statSync(out).size, sha256: sha256(out) })}\n`,
  );
}

/** The recipe fields every method shares: only the learning rate (and what trains) differs. */
function commonRecipe(o, lr) {
  return {
    data: { type: 'text', path: resolve(o.new), validation_fraction: VALIDATION_FRACTION },
    optimizer: { type: 'adamw', lr, betas: [0.9, 0.95], eps: 1e-8, weight_decay: 0 },
    schedule: { type: 'cosine', warmup_steps: Math.max(1, Math.round(o.steps / 10)), min_lr: lr / 10 },
    batch_size: 16,
    context: 128,
    steps: o.steps,
    clip_grad_norm: 1.0,
    seed: o.seed,
    log_every: 10,
    eval_every: o.steps,
    eval_batches: o.evalBatches,
    checkpoint_every: o.steps,
  };
}

/** The recipe of one method on this base (`baseRecipe`: the base's recipe.json). */
function methodRecipe(method, baseRecipe, o, lr) {
  const common = { name: `${o.name}-${method}`, ...commonRecipe(o, lr) };
  const optimizer = o.loraplus ? { ...common.optimizer, loraplus_lr_ratio: o.loraplus } : common.optimizer;
  const lora = (target_modules) => ({ ...common, optimizer, lora: { ...o.lora, target_modules } });
  const m = baseRecipe.model;
  const layers = m.type === 'gpt' ? m.n_layer : m.num_hidden_layers;
  const last = [layers - 2, layers - 1];
  switch (method) {
    case 'lora-attn':
      return lora(ATTENTION_REGEX);
    case 'lora-all':
      return lora('all-linear');
    case 'lora-linear':
      if (m.type === 'gpt' || m.tie_word_embeddings)
        throw new Error('lora-linear needs an output head of its own; this base ties it to the token embedding');
      return lora(LLAMA_LINEAR_REGEX);
    case 'lora-q8':
      return { ...lora(ATTENTION_REGEX), quantize: 'q8_0' };
    case 'last2':
      return {
        ...common,
        trainable:
          m.type === 'gpt'
            ? [...last.map((i) => `h.${i}.**`), 'ln_f.*']
            : [...last.map((i) => `model.layers.${i}.**`), 'model.norm.*'],
      };
    case 'full':
      return { ...common, trainable: ['**'] };
    case 'scratch':
      return { ...common, model: m, tokenizer: baseRecipe.tokenizer ?? 'bytes' };
    default:
      throw new Error(`unknown method ${method}; known: ${[...METHODS, 'lora-linear'].join(', ')}`);
  }
}

/** Runs `args` under /usr/bin/time; resolves with wall seconds, peak RSS bytes, exit code and stdout. */
function timedChild(args, logPath) {
  const timeFile = `${logPath}.time`;
  return new Promise((done, fail) => {
    const child = spawn('/usr/bin/time', ['-f', '%e %M', '-o', timeFile, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, KNOBS_THREADS: '1' },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', fail);
    child.on('close', (code) => {
      writeFileSync(logPath, stderr);
      const [wall, kib] = readFileSync(timeFile, 'utf8').trim().split('\n').pop().split(' ').map(Number);
      done({ code, wall_s: wall, peak_rss_bytes: kib * 1024, stdout });
    });
  });
}

function fileBytes(path) {
  try {
    return statSync(path).size;
  } catch {
    return null;
  }
}

/** The size of the optimizer state in the newest checkpoint of `dir`. */
function optimizerStateBytes(dir) {
  const root = join(dir, 'checkpoints');
  const steps = readdirSync(root)
    .filter((n) => /^step-\d+$/.test(n))
    .sort((a, b) => Number(b.slice(5)) - Number(a.slice(5)));
  return steps.length > 0 ? fileBytes(join(root, steps[0], 'optimizer.safetensors')) : null;
}

function lastEval(dir) {
  const rows = readFileSync(join(dir, 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  return rows.filter((r) => 'eval_loss' in r).pop() ?? null;
}

function medianTokensPerS(dir) {
  const rows = readFileSync(join(dir, 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  const v = rows
    .filter((r) => 'tokens_per_s' in r)
    .map((r) => r.tokens_per_s)
    .sort((a, b) => a - b);
  return v.length ? v[Math.floor(v.length / 2)] : null;
}

/** One sweep point: the child run, then the row (loss on the new text from the run's own final eval). */
async function runOne(method, lr, baseRecipe, o) {
  const dir = join(o.work, `${method}-lr${lr}`);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(o.work, { recursive: true });
  const recipePath = `${dir}.recipe.json`;
  writeFileSync(recipePath, `${JSON.stringify(methodRecipe(method, baseRecipe, o, lr), null, 2)}\n`);
  const args =
    method === 'scratch'
      ? [process.execPath, ...NODE_FLAGS, KNOBS, 'train', recipePath, '--out', dir, '--json']
      : [process.execPath, ...NODE_FLAGS, KNOBS, 'tune', o.base, recipePath, '--out', dir, '--json'];
  const t = await timedChild(args, `${dir}.log`);
  if (t.code !== 0) {
    const row = { kind: 'failed', name: o.name, method, lr, code: t.code, log: shown(`${dir}.log`) };
    process.stderr.write(`${JSON.stringify(row)}\n${readFileSync(`${dir}.log`, 'utf8').slice(-2000)}\n`);
    return row;
  }
  const result = JSON.parse(t.stdout);
  const ev = lastEval(dir);
  const lora = method.startsWith('lora');
  const resultFile = lora ? join(dir, 'adapter_model.safetensors') : join(dir, 'model.safetensors');
  const trainable = method === 'scratch' ? null : result.trainableParameters;
  return {
    kind: 'sweep',
    name: o.name,
    method,
    lr,
    ...(lora ? { lora: o.lora } : {}),
    ...(lora && o.loraplus ? { loraplus_lr_ratio: o.loraplus } : {}),
    seed: o.seed,
    steps: o.steps,
    tokens: o.steps * 16 * 128,
    trainable_parameters: trainable,
    total_parameters: method === 'scratch' ? null : result.totalParameters,
    result_file: basename(resultFile),
    result_bytes: fileBytes(resultFile),
    optimizer_state_bytes: optimizerStateBytes(dir),
    wall_s: t.wall_s,
    peak_rss_bytes: t.peak_rss_bytes,
    median_tokens_per_s: medianTokensPerS(dir),
    new_val_loss: ev.eval_loss,
    eval_batches: o.evalBatches,
    dir: shown(dir),
  };
}

/** Loss on the old text (forgetting) of a chosen run, in a child so each run's memory stays its own. */
async function oldLoss(row, o) {
  const model = row.method.startsWith('lora') ? o.base : row.dir;
  const adapter = row.method.startsWith('lora') ? ['--adapter', row.dir] : [];
  if (row.method === 'lora-q8') adapter.push('--quantize', 'q8_0');
  const args = [process.execPath, ...NODE_FLAGS, fileURLToPath(import.meta.url), 'eval', model, ...adapter];
  const t = await timedChild([...args, '--data', o.old, '--batches', String(o.evalBatches)], `${row.dir}.old.log`);
  if (t.code !== 0) throw new Error(`eval of ${row.dir} failed: ${readFileSync(`${row.dir}.old.log`, 'utf8')}`);
  return JSON.parse(t.stdout).loss;
}

/** Runs `tasks` (functions returning promises), at most `jobs` at a time, in order of start. */
async function pool(tasks, jobs) {
  const results = new Array(tasks.length);
  let next = 0;
  const worker = async () => {
    while (next < tasks.length) {
      const i = next++;
      results[i] = await tasks[i]();
    }
  };
  await Promise.all(Array.from({ length: Math.min(jobs, tasks.length) }, worker));
  return results;
}

async function run(argv) {
  const { values } = parseArgs({
    args: argv,
    options: {
      base: { type: 'string' },
      name: { type: 'string' },
      new: { type: 'string' },
      old: { type: 'string' },
      steps: { type: 'string' },
      lrs: { type: 'string', default: '1e-3,3e-3,1e-2' },
      methods: { type: 'string', default: METHODS.join(',') },
      jobs: { type: 'string', default: '2' },
      'eval-batches': { type: 'string', default: '40' },
      lora: { type: 'string', default: '{}' },
      loraplus: { type: 'string' },
      seed: { type: 'string', default: '0' },
      work: { type: 'string' },
      out: { type: 'string' },
      // --no-base-eval: a second sweep into the same RESULTS (more methods) needs the base's losses once.
      'base-eval': { type: 'boolean', default: true },
      'no-base-eval': { type: 'boolean' },
    },
  });
  if (values['no-base-eval']) values['base-eval'] = false;
  for (const k of ['base', 'name', 'new', 'old', 'steps', 'work', 'out'])
    if (values[k] === undefined) throw new Error(`run needs --${k}`);
  const loraOverrides = JSON.parse(values.lora);
  for (const k of ['r', 'target_modules'])
    if (k in loraOverrides) throw new Error(`--lora cannot set ${k}: the comparison is rank 8 on fixed targets`);
  const o = {
    lora: { ...LORA_FIXED, ...loraOverrides },
    loraplus: values.loraplus === undefined ? null : Number(values.loraplus),
    seed: Number(values.seed),
    base: resolve(values.base),
    name: values.name,
    new: resolve(values.new),
    old: resolve(values.old),
    steps: Number(values.steps),
    evalBatches: Number(values['eval-batches']),
    work: resolve(values.work),
  };
  const lrs = values.lrs.split(',').map(Number);
  // An empty list runs nothing and only finishes the sweeps already in RESULTS (their winners' old-text loss).
  const methods = values.methods.split(',').filter((m) => m !== '');
  const baseRecipe = JSON.parse(readFileSync(join(o.base, 'recipe.json'), 'utf8'));
  const emit = (row) => appendFileSync(values.out, `${JSON.stringify(row)}\n`);
  emit({
    kind: 'setup',
    name: o.name,
    base: shown(o.base),
    base_steps: baseRecipe.steps,
    // A knobs run directory records its own evaluations; another base (a Hugging Face directory) does not.
    base_final_eval: fileBytes(join(o.base, 'metrics.jsonl')) === null ? null : lastEval(o.base),
    base_bytes: fileBytes(join(o.base, 'model.safetensors')),
    new_text: { path: shown(o.new), bytes: statSync(o.new).size, sha256: sha256(o.new) },
    old_text: { path: shown(o.old), bytes: statSync(o.old).size, sha256: sha256(o.old) },
    steps: o.steps,
    lrs,
    methods,
    lora: o.lora,
    ...(o.loraplus ? { loraplus_lr_ratio: o.loraplus } : {}),
    seed: o.seed,
    jobs: Number(values.jobs),
    cpus: cpus().length,
    loadavg_start: loadavg(),
    started: new Date().toISOString(),
  });
  // The base itself, before any tuning: the reference for both losses.
  const baseEval = async (text) => {
    const log = join(o.work, `base-${basename(text)}.log`);
    mkdirSync(o.work, { recursive: true });
    const args = [process.execPath, ...NODE_FLAGS, fileURLToPath(import.meta.url), 'eval', o.base, '--data', text];
    const t = await timedChild([...args, '--batches', String(o.evalBatches)], log);
    if (t.code !== 0) throw new Error(`base eval failed: ${readFileSync(log, 'utf8')}`);
    return JSON.parse(t.stdout).loss;
  };
  if (values['base-eval']) {
    const [baseNew, baseOld] = await pool([() => baseEval(o.new), () => baseEval(o.old)], 2);
    emit({ kind: 'base', name: o.name, new_val_loss: baseNew, old_val_loss: baseOld, eval_batches: o.evalBatches });
  }
  const tasks = methods.flatMap((method) =>
    lrs.map((lr) => async () => {
      const row = await runOne(method, lr, baseRecipe, o);
      emit(row);
      process.stderr.write(`${o.name} ${method} lr ${lr}: ${row.new_val_loss ?? row.kind} (${row.wall_s ?? '-'} s)\n`);
      return row;
    }),
  );
  await pool(tasks, Number(values.jobs));
  // The winners of every sweep (a method, and for LoRA its settings) this base has rows for in RESULTS
  // without a chosen row yet: a sweep stopped after some methods and continued by another call is
  // finished here too, and so is each of several LoRA settings swept into one file.
  const rows = readFileSync(values.out, 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l))
    .filter((r) => r.name === o.name);
  const done = new Set(rows.filter((r) => r.kind === 'chosen').map(sweepOf));
  const winners = [...new Set(rows.filter((r) => r.kind === 'sweep').map(sweepOf))]
    .filter((sweep) => !done.has(sweep))
    .map((sweep) => rows.filter((r) => r.kind === 'sweep' && sweepOf(r) === sweep))
    .filter((rs) => rs.length > 0)
    .map((rs) => rs.reduce((a, b) => (b.new_val_loss < a.new_val_loss ? b : a)));
  const olds = await pool(
    winners.map((w) => () => oldLoss(w, o)),
    Number(values.jobs),
  );
  winners.forEach((w, i) => emit({ ...w, kind: 'chosen', old_val_loss: olds[i] }));
  emit({ kind: 'done', name: o.name, loadavg_end: loadavg(), finished: new Date().toISOString() });
}

const LABELS = {
  'lora-attn': 'LoRA r 8, attention',
  'lora-all': 'LoRA r 8, PEFT `all-linear` (the head left out)',
  'lora-linear': 'LoRA r 8, every linear layer, the head too',
  'lora-q8': 'LoRA r 8, attention, q8_0 base',
  last2: 'last two blocks',
  full: 'full fine-tune',
  scratch: 'from scratch',
};

/** The base's training as the setup row has it: steps, and its own last evaluation when recorded. */
function baseTrained(setup) {
  const ev = setup.base_final_eval;
  if (!ev) return `${setup.base_steps} steps`;
  return `${ev.step} steps, validation loss ${ev.eval_loss.toFixed(4)} at step ${ev.step} on its own text`;
}

/** The LoRA settings of a row or setup (rows written before --lora existed ran LORA_FIXED). */
const loraOf = (row) => row.lora ?? LORA_FIXED;

/** PEFT's fields as one short phrase: r, α, the scaling it gives, and any non-default other field. */
function loraSettings(lora) {
  const { r, lora_alpha: alpha, use_rslora: rs, target_modules: _targets, ...rest } = { ...LORA_FIXED, ...lora };
  const scaling = rs ? `rsLoRA α/√r = ${(alpha / Math.sqrt(r)).toFixed(2)}` : `α/r = ${alpha / r}`;
  const others = Object.entries(rest)
    .filter(([k, v]) => !(k in LORA_FIXED && LORA_FIXED[k] === v))
    .map(([k, v]) => `${k} ${JSON.stringify(v)}`);
  return [`r ${r}, α ${alpha}, scaling ${scaling}`, ...others].join(', ');
}

/** Which sweep a row belongs to: its method, for LoRA its settings, and its seed (rows without one ran seed 0). */
const sweepOf = (row) =>
  `${row.method.startsWith('lora') ? `${row.method}: ${rowLoraSettings(row)}` : row.method}${row.seed ? `, seed ${row.seed}` : ''}`;

/** A row's or setup's LoRA settings, with the LoRA+ ratio its optimizer used (rows without one had none). */
const rowLoraSettings = (row) =>
  `${loraSettings(loraOf(row))}${row.loraplus_lr_ratio ? `, LoRA+ lr ratio ${row.loraplus_lr_ratio}` : ''}`;

const mib = (b) => (b === null ? '–' : `${(b / 2 ** 20).toFixed(2)} MiB`);

function table(files) {
  const rows = files.flatMap((f) =>
    readFileSync(f, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l)),
  );
  const out = [];
  // Several sweeps of one base (more methods added later) make one table: the first setup, every method.
  const names = [...new Set(rows.filter((r) => r.kind === 'setup').map((r) => r.name))];
  for (const name of names) {
    const setups = rows.filter((r) => r.kind === 'setup' && r.name === name);
    const methods = [...new Set(setups.flatMap((s) => s.methods))].sort(
      (a, b) => Object.keys(LABELS).indexOf(a) - Object.keys(LABELS).indexOf(b),
    );
    const setup = { ...setups[0], methods };
    const base = rows.find((r) => r.kind === 'base' && r.name === name);
    // A sweep cut short (no `chosen` rows yet) still gives its best run so far, without the KJV loss.
    const finished = rows.filter((r) => r.kind === 'chosen' && r.name === name);
    const chosen = setup.methods
      .map(
        (method) =>
          finished.find((r) => r.method === method) ??
          rows
            .filter((r) => r.kind === 'sweep' && r.name === name && r.method === method)
            .reduce((a, b) => (a === null || b.new_val_loss < a.new_val_loss ? b : a), null),
      )
      .filter((r) => r !== null);
    const sweep = rows.filter((r) => r.kind === 'sweep' && r.name === name);
    const full = chosen.find((r) => r.method === 'full');
    out.push(
      `**${name}** (base: ${baseTrained(setup)}, ${mib(setup.base_bytes)}; ${setup.steps} steps × 16 × 128 = ${(setup.steps * 2048).toLocaleString('en')} tokens per run; validation: first ${base.eval_batches} batches of each split; LoRA: ${rowLoraSettings(setup)})`,
      '',
      '| method | lr chosen (sweep: lr: fortunes loss) | trainable | adapter / checkpoint | wall | peak RSS | optimizer state | fortunes val loss | KJV val loss |',
      '| --- | --- | --- | --- | --- | --- | --- | --- | --- |',
      `| base, untuned | – | – | ${mib(setup.base_bytes)} | – | – | – | ${base.new_val_loss.toFixed(4)} | ${base.old_val_loss.toFixed(4)} |`,
    );
    for (const r of chosen) {
      const share =
        r.trainable_parameters === null
          ? '100 % (new model)'
          : `${((100 * r.trainable_parameters) / r.total_parameters).toFixed(2)} % (${r.trainable_parameters.toLocaleString('en')})`;
      const bytes = `${mib(r.result_bytes)} (${((100 * r.result_bytes) / setup.base_bytes).toFixed(1)} %)`;
      const vsFull = full && r.method !== 'full' ? ` (${(r.new_val_loss / full.new_val_loss).toFixed(3)}× full)` : '';
      const lossesOf = sweep
        .filter((s) => s.method === r.method)
        .sort((a, b) => a.lr - b.lr)
        .map((s) => `${s.lr}: ${s.new_val_loss.toFixed(3)}`)
        .join(', ');
      out.push(
        `| ${LABELS[r.method]} | **${r.lr}** (${lossesOf}) | ${share} | ${bytes} | ${r.wall_s.toFixed(0)} s | ${mib(r.peak_rss_bytes)} | ${mib(r.optimizer_state_bytes)} | ${r.new_val_loss.toFixed(4)}${vsFull} | ${r.old_val_loss?.toFixed(4) ?? 'not measured'} |`,
      );
    }
    out.push('');
  }
  process.stdout.write(`${out.join('\n')}\n`);
}

/** Every LoRA setting the files hold, one line per base, method and setting, against the best full fine-tune. */
function candidates(files) {
  const all = files.flatMap((f) =>
    readFileSync(f, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l)),
  );
  const rows = all.filter((r) => r.kind === 'sweep');
  const lrs = [...new Set(rows.map((r) => r.lr))].sort((a, b) => a - b);
  const out = [
    `| base | method | LoRA settings | seed | ${lrs.join(' | ')} | best | × full (same seed) | KJV loss of the best |`,
    `| --- | --- | --- | --- | ${lrs.map(() => '---').join(' | ')} | --- | --- | --- |`,
  ];
  // One line per base, method and setting, by method and then by the scaling the setting gives.
  const scaling = ({ lora_alpha: a, r, use_rslora: rs }) => (rs ? a / Math.sqrt(r) : a / r);
  const loraRows = rows
    .filter((r) => r.method.startsWith('lora'))
    .sort(
      (a, b) =>
        a.method.localeCompare(b.method) ||
        scaling(loraOf(a)) - scaling(loraOf(b)) ||
        rowLoraSettings(a).localeCompare(rowLoraSettings(b)) ||
        (a.seed ?? 0) - (b.seed ?? 0),
    );
  const groups = new Map();
  for (const r of loraRows) {
    const key = `${r.name}\u0000${sweepOf(r)}`;
    // A later run of the same setting and rate replaces an earlier one (the runs are deterministic).
    groups.set(key, { ...groups.get(key), [r.lr]: r });
  }
  for (const [key, byLr] of groups) {
    const [name] = key.split('\u0000');
    const { method, seed = 0 } = Object.values(byLr)[0];
    const settings = rowLoraSettings(Object.values(byLr)[0]);
    const full = rows
      .filter((r) => r.name === name && r.method === 'full' && (r.seed ?? 0) === seed)
      .reduce((a, b) => (a === null || b.new_val_loss < a.new_val_loss ? b : a), null);
    const best = Object.values(byLr).reduce((a, b) => (b.new_val_loss < a.new_val_loss ? b : a));
    const cells = lrs.map((lr) => (byLr[lr] ? byLr[lr].new_val_loss.toFixed(4) : '–'));
    const ratio = full ? `${(best.new_val_loss / full.new_val_loss).toFixed(3)}×` : '–';
    const chosen = all.find((r) => r.kind === 'chosen' && r.name === name && `${name}\u0000${sweepOf(r)}` === key);
    const old = chosen?.old_val_loss?.toFixed(4) ?? 'not measured';
    out.push(
      `| ${name} | ${method} | ${settings} | ${seed} | ${cells.join(' | ')} | ${best.new_val_loss.toFixed(4)} at ${best.lr} | ${ratio} | ${old} |`,
    );
  }
  process.stdout.write(`${out.join('\n')}\n`);
}

async function evalChild(argv) {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      adapter: { type: 'string', multiple: true, default: [] },
      quantize: { type: 'string' },
      data: { type: 'string' },
      batches: { type: 'string' },
    },
  });
  const { openLanguageModel } = await import(join(ROOT, 'dist/src/load/language-model.js'));
  const { openTextData } = await import(join(ROOT, 'dist/src/train/sources.js'));
  const { evaluateLanguageModel } = await import(join(ROOT, 'dist/src/train/evaluate.js'));
  // An adapter tuned on a quantized base is attached to the base quantized the same way (its digest says so).
  const quantize = values.quantize === undefined ? {} : { quantize: values.quantize };
  const { model } = await openLanguageModel(positionals[0], { adapters: values.adapter, ...quantize });
  const data = { type: 'text', path: resolve(values.data), validation_fraction: VALIDATION_FRACTION };
  const corpus = await openTextData(data, 128, VALIDATION_FRACTION);
  const ev = await evaluateLanguageModel(model, corpus, {
    split: 'validation',
    batchSize: 16,
    blockSize: 128,
    maxBatches: Number(values.batches),
  });
  await corpus.close();
  process.stdout.write(`${JSON.stringify(ev)}\n`);
}

const [command, ...rest] = process.argv.slice(2);
const commands = { fortunes, run, table, candidates, eval: evalChild };
if (!(command in commands)) {
  process.stderr.write(`usage: finetune_economics.mjs ${Object.keys(commands).join('|')} …  (see the file comment)\n`);
  process.exit(2);
}
await commands[command](rest);
