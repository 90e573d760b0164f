/**
 * Checkpoints that survive a crash (kill -9, power cut, full disk) at any moment.
 *
 * Layout of a run directory:
 *
 *   RUN/checkpoints/step-N/             one committed checkpoint per step
 *                       manifest.json   {"format":"knobs-checkpoint","version":1,"step":N,"created":ISO,
 *                                        "files":{"model.safetensors":{"size":…,"sha256":"hex"},…}}
 *                       <files>         whatever the trainer saved (weights, optimizer state, JSON)
 *   RUN/checkpoints/LATEST              "step-N\n": the last checkpoint committed (a hint; see below)
 *   RUN/checkpoints/.staging-step-N-PID a checkpoint being written by process PID (never read)
 *
 * Saving (saveCheckpoint), in this order:
 *   1. every file goes into the staging directory, written in a loop until all bytes are out,
 *      and fsynced; its SHA-256 and size are computed from the bytes as they are written;
 *   2. manifest.json is written the same way, then the staging directory is fsynced;
 *   3. the staging directory is renamed to step-N (the commit point) and checkpoints/ is fsynced;
 *   4. LATEST is replaced atomically (temp name, fsync, rename, fsync).
 * A crash before 3 leaves only a staging directory (cleanStaging removes it); after 3 the
 * checkpoint is complete. A failure before 3 removes the staging directory and throws an IOError
 * that says the previous checkpoints are intact, which they are: nothing else was touched.
 *
 * Resuming (findLatestVerified) picks the highest step whose manifest verifies (every file present,
 * the right size, the right SHA-256), and falls back to older ones, saying which and why. It does
 * not trust LATEST: a crash between 3 and 4 leaves LATEST one behind, and a disk can corrupt a
 * committed file; the manifest check catches both.
 *
 * Re-saving a step that exists (after falling back past a damaged checkpoint) moves the old
 * directory aside to `.replaced-step-N-PID` first, and removes it after the commit; cleanStaging
 * puts it back if a crash came in between.
 */
import { createHash } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { ArgumentError, FormatError, IOError, KnobsError } from '../errors.js';
import {
  type LoadedSafetensors,
  type SafetensorsValue,
  encodeSafetensors,
  loadSafetensors,
} from '../formats/safetensors.js';
import { type WriteFs, asIOError, atomicTempPid, nodeWriteFs, writeAll, writeFileAtomic } from '../io/atomic.js';
import { MAX_JSON_DEPTH, jsonDepth, parseJsonFile } from '../io/json.js';
import { hashRegularFile, readRegularFile, readRegularText } from '../io/regular-file.js';

export const CHECKPOINTS_DIR = 'checkpoints';
export const MANIFEST_NAME = 'manifest.json';
export const LATEST_NAME = 'LATEST';
export const CHECKPOINT_FORMAT = 'knobs-checkpoint';
export const CHECKPOINT_VERSION = 1;
/** A manifest larger than this is refused before it is read (it lists files, it holds no data). */
export const MAX_MANIFEST_BYTES = 16 * 1024 * 1024;
/** Files per checkpoint; more is a bug in the caller, not a checkpoint. */
export const MAX_CHECKPOINT_FILES = 10_000;
/** readCheckpointFile reads whole files; larger ones go through loadCheckpointTensors (by ranges). */
const MAX_WHOLE_FILE = 2 ** 31 - 1;

/**
 * What a checkpoint file can hold: raw bytes, UTF-8 text (e.g. JSON.stringify of trainer state),
 * or tensors (a Map or a plain object of Tensor / RawTensor), written as a safetensors file.
 */
export type CheckpointFileData =
  Uint8Array | string | ReadonlyMap<string, SafetensorsValue> | Readonly<Record<string, SafetensorsValue>>;

export interface ManifestEntry {
  readonly size: number;
  readonly sha256: string;
}

export interface CheckpointManifest {
  readonly format: typeof CHECKPOINT_FORMAT;
  readonly version: typeof CHECKPOINT_VERSION;
  readonly step: number;
  readonly created: string;
  readonly files: Readonly<Record<string, ManifestEntry>>;
}

export interface Checkpoint {
  readonly step: number;
  /** `step-N` */
  readonly name: string;
  /** Absolute or runDir-relative path of the step directory. */
  readonly dir: string;
  readonly manifest: CheckpointManifest;
}

export interface SaveCheckpointOptions {
  /** File-system adapter for writes (default node:fs); tests inject failures through it. */
  fs?: WriteFs;
  /** After the commit, prune to this many verified checkpoints (see pruneCheckpoints). */
  keep?: number;
  /**
   * Problems after the commit that do not undo it (an old directory that could not be removed,
   * a prune that could not delete): each message names the path and what to do.
   */
  onWarning?: (message: string) => void;
}

export type VerifyMode = 'sha256' | 'size';

export interface VerifyResult {
  readonly ok: boolean;
  /** Why it failed (empty when ok). */
  readonly problems: readonly string[];
  readonly manifest: CheckpointManifest | null;
}

export interface LatestResult {
  /** The newest checkpoint that verifies, or null when there is none. */
  readonly checkpoint: Checkpoint | null;
  /** Checkpoints skipped and why, and notes about LATEST; empty in the ordinary case. */
  readonly warnings: readonly string[];
}

export interface FindLatestOptions {
  mode?: VerifyMode;
  /**
   * Called with each checkpoint that verifies, newest first, to load it (the trainer validates and
   * applies trainer.json and the tensors here). Throwing rejects it like a corrupt one: a warning
   * names it and the reason, and the search goes on with the next older checkpoint.
   */
  accept?: (checkpoint: Checkpoint) => Promise<void>;
}

export interface PruneResult {
  readonly deleted: readonly string[];
  readonly kept: readonly string[];
  readonly warnings: readonly string[];
}

export interface CleanResult {
  /** Leftovers removed (names inside checkpoints/). */
  readonly removed: readonly string[];
  /** `.replaced-step-N-PID` directories moved back to step-N (a crash mid-replacement). */
  readonly restored: readonly string[];
  /** Leftovers of a process that is still running, left alone. */
  readonly skipped: readonly string[];
  /** Leftovers that could not be removed or restored, each naming the path and what to do; they never block resuming. */
  readonly warnings: readonly string[];
}

// ---- names -----------------------------------------------------------------------------------

const STEP_DIR = /^step-(0|[1-9][0-9]{0,15})$/;
const LEFTOVER = /^\.(staging|replaced|deleting)-step-(0|[1-9][0-9]{0,15})-([1-9][0-9]{0,9})$/;
/** Bare, portable names: no separators, no leading dot, nothing a shell or Windows trips over. */
const FILE_NAME = /^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,199}$/;

export function checkpointsDir(runDir: string): string {
  return join(runDir, CHECKPOINTS_DIR);
}

export function stepDirName(step: number): string {
  checkStep(step);
  return `step-${step}`;
}

function checkStep(step: number): void {
  if (!Number.isSafeInteger(step) || step < 0) {
    throw new ArgumentError(`checkpoint step must be a non-negative integer, got ${step}`, { step });
  }
}

function parseStepDir(name: string): number | null {
  const m = STEP_DIR.exec(name);
  if (!m) return null;
  const n = Number(m[1]);
  return Number.isSafeInteger(n) ? n : null;
}

function checkFileName(name: string): void {
  if (!FILE_NAME.test(name) || name === MANIFEST_NAME || name.includes('..')) {
    throw new ArgumentError(
      `checkpoint file name ${JSON.stringify(name)} is not allowed: use a bare name of letters, digits, '_', '.', '+', '-' (not starting with '.', no '..', at most 200 characters, not ${MANIFEST_NAME})`,
      { name },
    );
  }
}

// ---- encoding files --------------------------------------------------------------------------

interface PreparedFile {
  readonly name: string;
  readonly chunks: readonly Uint8Array[];
}

function prepareFile(name: string, data: CheckpointFileData): PreparedFile {
  checkFileName(name);
  if (data instanceof Uint8Array) return { name, chunks: [data] };
  if (typeof data === 'string') {
    if (/\p{Surrogate}/u.test(data))
      throw new ArgumentError(
        `checkpoint file ${JSON.stringify(name)}: text has a lone surrogate and would not survive UTF-8`,
      );
    return { name, chunks: [new TextEncoder().encode(data)] };
  }
  if (data instanceof Map || (typeof data === 'object' && data !== null && !ArrayBuffer.isView(data))) {
    return { name, chunks: encodeTensors(name, data) };
  }
  throw new ArgumentError(
    `checkpoint file ${JSON.stringify(name)}: expected bytes (Uint8Array), text (string) or tensors (a Map or object of Tensor), got ${typeof data}`,
  );
}

/** Tensors → the chunks of a safetensors file, exactly as saveSafetensors writes them; errors name the checkpoint file. */
function encodeTensors(
  file: string,
  tensors: ReadonlyMap<string, SafetensorsValue> | Readonly<Record<string, SafetensorsValue>>,
): Uint8Array[] {
  try {
    return encodeSafetensors(tensors);
  } catch (err) {
    if (err instanceof ArgumentError)
      throw new ArgumentError(`checkpoint file ${JSON.stringify(file)}: ${err.message}`, err.details);
    throw err;
  }
}

// ---- saving ----------------------------------------------------------------------------------

/**
 * Saves `files` as checkpoint `step` of the run in `runDir`, crash-safely (see the top of this
 * file). Returns the committed checkpoint. On failure nothing is committed, the staging directory
 * is removed, and an IOError says so; earlier checkpoints are never touched by a failed save.
 */
export async function saveCheckpoint(
  runDir: string,
  step: number,
  files: ReadonlyMap<string, CheckpointFileData> | Readonly<Record<string, CheckpointFileData>>,
  opts: SaveCheckpointOptions = {},
): Promise<Checkpoint> {
  checkStep(step);
  if (opts.keep !== undefined && (!Number.isSafeInteger(opts.keep) || opts.keep < 1)) {
    throw new ArgumentError(`saveCheckpoint: keep must be an integer >= 1, got ${opts.keep}`);
  }
  const fs = opts.fs ?? nodeWriteFs;
  const entries = files instanceof Map ? [...files] : Object.entries(files);
  if (entries.length > MAX_CHECKPOINT_FILES)
    throw new ArgumentError(`saveCheckpoint: ${entries.length} files; at most ${MAX_CHECKPOINT_FILES}`);
  // Encode (and reject bad input) before touching the disk.
  const prepared = entries.map(([name, data]) => prepareFile(name, data));

  const ckDir = checkpointsDir(runDir);
  const name = stepDirName(step);
  const target = join(ckDir, name);
  const staging = join(ckDir, `.staging-${name}-${process.pid}`);
  const aside = join(ckDir, `.replaced-${name}-${process.pid}`);

  let manifest: CheckpointManifest;
  try {
    const made = await fsp.mkdir(ckDir, { recursive: true });
    if (made !== undefined) await fs.syncDir(dirname(made)); // the new directory's own name, durable
    await fs.remove(staging); // our own leftover from an earlier failed attempt at this step
    await fs.mkdir(staging);
    // No prototype, so a file named __proto__ is just a key.
    const listed: Record<string, ManifestEntry> = Object.create(null) as Record<string, ManifestEntry>;
    for (const file of prepared) listed[file.name] = await writeHashed(fs, join(staging, file.name), file.chunks);
    manifest = {
      format: CHECKPOINT_FORMAT,
      version: CHECKPOINT_VERSION,
      step,
      created: new Date().toISOString(),
      files: listed,
    };
    await writeHashed(fs, join(staging, MANIFEST_NAME), [
      new TextEncoder().encode(`${JSON.stringify(manifest, null, 2)}\n`),
    ]);
    await fs.syncDir(staging);
  } catch (err) {
    await fs.remove(staging).catch(() => undefined);
    throw await saveFailed(runDir, name, err);
  }

  // Commit: rename staging → step-N. An existing step-N (a damaged or abandoned one) is moved aside first.
  let movedAside = false;
  try {
    if (await exists(target)) {
      await fs.remove(aside);
      await fs.rename(target, aside);
      movedAside = true;
    }
    await fs.rename(staging, target);
  } catch (err) {
    if (movedAside) await fs.rename(aside, target).catch(() => undefined);
    await fs.remove(staging).catch(() => undefined);
    throw await saveFailed(runDir, name, err);
  }
  const warn = opts.onWarning ?? (() => undefined);
  // Committed. The old copy of a replaced step is garbage now: one that cannot be removed is a
  // warning (cleanStaging retries on the next start), never a reason to skip LATEST.
  if (movedAside) {
    await fs.remove(aside).catch((err: unknown) => {
      warn(
        `checkpoint ${name} was committed, but its replaced copy ${aside} could not be removed (${errMessage(err)}); remove it by hand (rm -rf ${aside}), it is not needed`,
      );
    });
  }
  try {
    await fs.syncDir(ckDir);
    await writeFileAtomic(join(ckDir, LATEST_NAME), `${name}\n`, { fs });
  } catch (err) {
    const cause = err instanceof KnobsError ? err.message : String(err);
    throw new IOError(
      `checkpoint ${name} in ${ckDir} was committed and verifies, but updating ${LATEST_NAME} failed: ${cause}. Resuming still finds ${name}; fix that before saving again`,
      { path: ckDir, step, committed: true, ...errnoOf(err) },
    );
  }
  const checkpoint: Checkpoint = { step, name, dir: target, manifest };
  if (opts.keep !== undefined) {
    for (const message of (await pruneCheckpoints(runDir, opts.keep, { fs })).warnings) warn(message);
  }
  return checkpoint;
}

/** Writes chunks to a new file, looping over short writes, hashing as it goes; fsyncs and closes it. */
async function writeHashed(fs: WriteFs, path: string, chunks: readonly Uint8Array[]): Promise<ManifestEntry> {
  const hash = createHash('sha256');
  const file = await fs.create(path).catch((err: unknown) => {
    throw asIOError(err, path, 'create');
  });
  let size = 0;
  try {
    for (const chunk of chunks) {
      size = await writeAll(file, chunk, size, path);
      hash.update(chunk);
    }
    await file.sync().catch((err: unknown) => {
      throw asIOError(err, path, 'fsync');
    });
  } finally {
    await file.close().catch(() => undefined);
  }
  return { size, sha256: hash.digest('hex') };
}

async function saveFailed(runDir: string, name: string, err: unknown): Promise<IOError> {
  const ckDir = checkpointsDir(runDir);
  const steps = await listCheckpoints(runDir).catch(() => []);
  const newest = steps.at(-1);
  const previous = newest
    ? `the previous checkpoints are intact (newest: ${newest.name})`
    : 'there is no previous checkpoint';
  // A raw Node error names its path and syscall; asIOError adds what to do about its errno.
  const e = err as NodeJS.ErrnoException;
  const cause = asIOError(
    err,
    typeof e?.path === 'string' ? e.path : ckDir,
    typeof e?.syscall === 'string' ? e.syscall : 'write',
  ).message;
  return new IOError(`saving checkpoint ${name} in ${ckDir} failed, nothing was committed and ${previous}: ${cause}`, {
    path: ckDir,
    checkpoint: name,
    previous: newest?.name ?? null,
    ...errnoOf(err),
  });
}

function errnoOf(err: unknown): Record<string, unknown> {
  if (err instanceof KnobsError && typeof err.details.errno === 'string') return { errno: err.details.errno };
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return typeof code === 'string' ? { errno: code } : {};
}

async function exists(path: string): Promise<boolean> {
  try {
    await fsp.lstat(path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}

// ---- listing and verifying -------------------------------------------------------------------

/** Committed step directories (verified or not), oldest first. */
export async function listCheckpoints(runDir: string): Promise<{ step: number; name: string; dir: string }[]> {
  const ckDir = checkpointsDir(runDir);
  let names: string[];
  try {
    names = await fsp.readdir(ckDir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw asIOError(err, ckDir, 'list');
  }
  const out: { step: number; name: string; dir: string }[] = [];
  for (const name of names) {
    const step = parseStepDir(name);
    if (step !== null) out.push({ step, name, dir: join(ckDir, name) });
  }
  return out.sort((a, b) => a.step - b.step);
}

/**
 * Checks one checkpoint directory against its manifest: the manifest parses and names this step,
 * and every listed file is a regular file of the listed size and (in 'sha256' mode, the default)
 * the listed SHA-256. Never throws for a damaged checkpoint; it reports problems instead.
 */
export async function verifyCheckpoint(dir: string, opts: { mode?: VerifyMode } = {}): Promise<VerifyResult> {
  const mode = opts.mode ?? 'sha256';
  const base =
    dir
      .replace(/[/\\]+$/, '')
      .split(/[/\\]/)
      .at(-1) ?? dir;
  const step = parseStepDir(base);
  let manifest: CheckpointManifest;
  try {
    manifest = await readManifest(join(dir, MANIFEST_NAME), step);
  } catch (err) {
    return { ok: false, problems: [errMessage(err)], manifest: null };
  }
  const problems: string[] = [];
  for (const [name, entry] of Object.entries(manifest.files)) {
    const path = join(dir, name);
    let st;
    try {
      st = await fsp.lstat(path);
    } catch (err) {
      problems.push(`${name} is missing (${(err as NodeJS.ErrnoException).code ?? errMessage(err)})`);
      continue;
    }
    if (!st.isFile()) {
      problems.push(`${name} is not a regular file`);
      continue;
    }
    if (st.size !== entry.size) {
      problems.push(
        `${name} is ${st.size} bytes but the manifest says ${entry.size} (${st.size < entry.size ? 'truncated' : 'grew'})`,
      );
      continue;
    }
    if (mode === 'sha256') {
      const digest = await sha256File(path).catch((err: unknown) => `unreadable: ${errMessage(err)}`);
      if (digest !== entry.sha256) {
        problems.push(
          digest.startsWith('unreadable')
            ? `${name} is ${digest}`
            : `${name} has SHA-256 ${digest.slice(0, 16)}… but the manifest says ${entry.sha256.slice(0, 16)}… (its bytes changed: corruption)`,
        );
      }
    }
  }
  return { ok: problems.length === 0, problems, manifest };
}

/** Reads and validates a manifest; throws FormatError (rule names below) when it is not one. */
async function readManifest(path: string, expectedStep: number | null): Promise<CheckpointManifest> {
  const bad = (rule: string, why: string): never => {
    throw new FormatError(rule, `${MANIFEST_NAME} ${why}`, { path });
  };
  let st;
  try {
    st = await fsp.lstat(path);
  } catch {
    return bad('manifest_missing', 'is missing (the directory was not committed by saveCheckpoint)');
  }
  if (!st!.isFile()) bad('manifest_missing', 'is not a regular file');
  if (st!.size > MAX_MANIFEST_BYTES)
    bad('manifest_too_large', `is ${st!.size} bytes, over the ${MAX_MANIFEST_BYTES}-byte limit`);
  let bytes: Uint8Array;
  let text: string;
  try {
    bytes = await readRegularFile(path, MAX_MANIFEST_BYTES, MANIFEST_NAME);
  } catch (err) {
    return bad('manifest_missing', `cannot be read: ${errMessage(err)}`);
  }
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    return bad('manifest_not_json', 'is not UTF-8 text');
  }
  let raw: unknown;
  try {
    raw = jsonDepth(text!) > MAX_JSON_DEPTH ? undefined : JSON.parse(text!);
  } catch {
    return bad('manifest_not_json', 'is not valid JSON (truncated or corrupted)');
  }
  if (raw === undefined) return bad('manifest_not_json', `is nested more than ${MAX_JSON_DEPTH} levels deep`);
  const m = raw as Record<string, unknown>;
  if (typeof m !== 'object' || m === null || Array.isArray(m)) return bad('manifest_invalid', 'is not a JSON object');
  if (m.format !== CHECKPOINT_FORMAT || m.version !== CHECKPOINT_VERSION) {
    bad(
      'manifest_invalid',
      `has format ${JSON.stringify(m.format)} version ${JSON.stringify(m.version)}; expected ${CHECKPOINT_FORMAT} version ${CHECKPOINT_VERSION}`,
    );
  }
  if (typeof m.step !== 'number' || !Number.isSafeInteger(m.step) || m.step < 0)
    bad('manifest_invalid', 'has no valid step');
  if (expectedStep !== null && m.step !== expectedStep)
    bad('manifest_step_mismatch', `says step ${String(m.step)} but the directory is step-${expectedStep}`);
  if (typeof m.created !== 'string') bad('manifest_invalid', 'has no created time');
  const files = m.files as Record<string, unknown>;
  if (typeof files !== 'object' || files === null || Array.isArray(files))
    return bad('manifest_invalid', 'has no files object');
  const names = Object.keys(files);
  if (names.length > MAX_CHECKPOINT_FILES) bad('manifest_invalid', `lists ${names.length} files`);
  const out: Record<string, ManifestEntry> = Object.create(null) as Record<string, ManifestEntry>;
  for (const name of names) {
    if (!FILE_NAME.test(name) || name === MANIFEST_NAME || name.includes('..'))
      bad('manifest_invalid', `lists a file with a disallowed name ${JSON.stringify(name)}`);
    const e = files[name] as Record<string, unknown>;
    if (
      typeof e !== 'object' ||
      e === null ||
      typeof e.size !== 'number' ||
      !Number.isSafeInteger(e.size) ||
      e.size < 0 ||
      typeof e.sha256 !== 'string' ||
      !/^[0-9a-f]{64}$/.test(e.sha256)
    ) {
      bad('manifest_invalid', `has an invalid entry for ${JSON.stringify(name)} (needs size and a hex sha256)`);
    }
    out[name] = { size: e.size as number, sha256: e.sha256 as string };
  }
  return {
    format: CHECKPOINT_FORMAT,
    version: CHECKPOINT_VERSION,
    step: m.step as number,
    created: m.created as string,
    files: out,
  };
}

/** SHA-256 of a file, read in chunks (works for files of any size). */
export async function sha256File(path: string): Promise<string> {
  return (await hashRegularFile(path)).sha256;
}

function errMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

async function readLatestPointer(ckDir: string): Promise<string | null> {
  try {
    return (await readRegularText(join(ckDir, LATEST_NAME), 256)).trim();
  } catch {
    return null;
  }
}

/**
 * The newest (highest step) checkpoint whose manifest verifies. Damaged or incomplete newer ones
 * are skipped, each with a warning that names it and says why; LATEST disagreeing with the result
 * is noted too. Returns `checkpoint: null` when nothing verifies (a fresh run, or total loss).
 */
export async function findLatestVerified(runDir: string, opts: FindLatestOptions = {}): Promise<LatestResult> {
  const ckDir = checkpointsDir(runDir);
  const all = await listCheckpoints(runDir);
  const warnings: string[] = [];
  let found: Checkpoint | null = null;
  for (let i = all.length - 1; i >= 0 && !found; i--) {
    const c = all[i]!;
    const result = await verifyCheckpoint(c.dir, opts);
    if (!result.ok || !result.manifest) {
      warnings.push(`skipping ${c.name} in ${ckDir}: ${result.problems.join('; ')}`);
      continue;
    }
    const candidate: Checkpoint = { step: c.step, name: c.name, dir: c.dir, manifest: result.manifest };
    try {
      await opts.accept?.(candidate);
      found = candidate;
    } catch (err) {
      warnings.push(`skipping ${c.name} in ${ckDir}: ${errMessage(err)}`);
    }
  }
  const latest = await readLatestPointer(ckDir);
  if (found && latest !== null && latest !== found.name) {
    warnings.push(
      `${LATEST_NAME} names ${JSON.stringify(latest)} but the newest checkpoint that verifies is ${found.name}; resuming from ${found.name}`,
    );
  }
  if (!found && all.length > 0)
    warnings.push(
      `no checkpoint in ${ckDir} verifies and loads; starting from scratch would lose ${all.length} damaged checkpoint(s)`,
    );
  return { checkpoint: found, warnings };
}

// ---- reading files of a checkpoint -----------------------------------------------------------

function entryOf(checkpoint: Checkpoint, name: string): ManifestEntry {
  const entry = Object.prototype.hasOwnProperty.call(checkpoint.manifest.files, name)
    ? checkpoint.manifest.files[name]
    : undefined;
  if (!entry) {
    throw new ArgumentError(
      `checkpoint ${checkpoint.name} has no file ${JSON.stringify(name)}; it has ${
        Object.keys(checkpoint.manifest.files)
          .map((n) => JSON.stringify(n))
          .join(', ') || 'none'
      }`,
    );
  }
  return entry;
}

/** A file's bytes, checked against the manifest's size and SHA-256 again as they are read. */
export async function readCheckpointFile(checkpoint: Checkpoint, name: string): Promise<Uint8Array> {
  const entry = entryOf(checkpoint, name);
  if (entry.size > MAX_WHOLE_FILE)
    throw new ArgumentError(
      `${name} is ${entry.size} bytes; read tensors with loadCheckpointTensors, which reads by ranges`,
    );
  const path = join(checkpoint.dir, name);
  let bytes: Uint8Array;
  try {
    bytes = await readRegularFile(path, MAX_WHOLE_FILE);
  } catch (err) {
    throw asIOError(err, path, 'read');
  }
  const digest = createHash('sha256').update(bytes).digest('hex');
  if (bytes.byteLength !== entry.size || digest !== entry.sha256) {
    throw new FormatError(
      'checksum_mismatch',
      `${path} no longer matches its checkpoint manifest (size ${bytes.byteLength} vs ${entry.size}, or SHA-256 differs); it changed after the checkpoint was verified`,
      { path },
    );
  }
  return bytes;
}

/** A text file of the checkpoint, parsed as JSON. */
export async function readCheckpointJson(checkpoint: Checkpoint, name: string): Promise<unknown> {
  return parseJsonFile(
    new TextDecoder().decode(await readCheckpointFile(checkpoint, name)),
    join(checkpoint.dir, name),
    'not_json',
  );
}

/** A tensors file of the checkpoint, through the safetensors reader (by byte ranges). */
export async function loadCheckpointTensors(checkpoint: Checkpoint, name: string): Promise<LoadedSafetensors> {
  entryOf(checkpoint, name);
  return loadSafetensors(join(checkpoint.dir, name));
}

// ---- pruning and cleaning --------------------------------------------------------------------

/**
 * Keeps the `keep` newest checkpoints that verify and deletes every checkpoint older than the
 * oldest of them. So nothing is deleted until `keep` verified checkpoints exist, the newest
 * verified checkpoint is never deleted, and damaged checkpoints newer than the kept ones are left
 * for the next save of that step to replace. The directory LATEST names is never deleted.
 * A directory is renamed to `.deleting-step-N-PID` before it is removed, so a crash mid-delete
 * never leaves a half-deleted `step-N`.
 */
export async function pruneCheckpoints(
  runDir: string,
  keep: number,
  opts: { mode?: VerifyMode; fs?: WriteFs } = {},
): Promise<PruneResult> {
  if (!Number.isSafeInteger(keep) || keep < 1)
    throw new ArgumentError(`pruneCheckpoints: keep must be an integer >= 1, got ${keep}`);
  const fs = opts.fs ?? nodeWriteFs;
  const ckDir = checkpointsDir(runDir);
  const all = await listCheckpoints(runDir);
  const warnings: string[] = [];
  const kept: string[] = [];
  let boundary = -1; // index in `all` of the oldest kept verified checkpoint
  for (let i = all.length - 1; i >= 0 && kept.length < keep; i--) {
    const result = await verifyCheckpoint(all[i]!.dir, { mode: opts.mode ?? 'sha256' });
    if (result.ok) {
      kept.push(all[i]!.name);
      boundary = i;
    } else {
      warnings.push(`${all[i]!.name} does not verify (${result.problems.join('; ')}); not counted as kept`);
    }
  }
  if (kept.length < keep) return { deleted: [], kept: all.map((c) => c.name), warnings };
  const latest = await readLatestPointer(ckDir);
  const deleted: string[] = [];
  for (const c of all.slice(0, boundary)) {
    if (c.name === latest) {
      warnings.push(`${c.name} is older than the kept checkpoints but ${LATEST_NAME} names it; not deleted`);
      continue;
    }
    const doomed = join(ckDir, `.deleting-${c.name}-${process.pid}`);
    try {
      await fs.remove(doomed);
      await fs.rename(c.dir, doomed);
    } catch (err) {
      warnings.push(
        `could not delete ${c.dir} (${errMessage(err)}); it is an old checkpoint, remove it by hand if you need the space`,
      );
      continue;
    }
    deleted.push(c.name);
    await fs.syncDir(ckDir).catch(() => undefined);
    await fs.remove(doomed).catch((err: unknown) => {
      warnings.push(
        `could not remove ${doomed} (${errMessage(err)}); remove it by hand (rm -rf ${doomed}), it is not needed`,
      );
    });
  }
  const remaining = all.filter((c) => !deleted.includes(c.name)).map((c) => c.name);
  return { deleted, kept: remaining, warnings };
}

function isAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Removes leftovers of interrupted saves, prunes and LATEST updates in `runDir/checkpoints/`:
 * only names that this module creates (`.staging-step-N-PID`, `.deleting-step-N-PID`,
 * `.replaced-step-N-PID`, `.LATEST.PID.*.tmp`), and only when PID is this process or no longer
 * runs (a live process's leftovers are its work in progress). A `.replaced-step-N-PID` whose
 * step-N is missing (a crash mid-replacement) is renamed back to step-N rather than removed.
 * Call it once on start, before findLatestVerified.
 */
export async function cleanStaging(runDir: string, opts: { fs?: WriteFs } = {}): Promise<CleanResult> {
  const fs = opts.fs ?? nodeWriteFs;
  const ckDir = checkpointsDir(runDir);
  let names: string[];
  try {
    names = await fsp.readdir(ckDir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT')
      return { removed: [], restored: [], skipped: [], warnings: [] };
    throw asIOError(err, ckDir, 'list');
  }
  const removed: string[] = [];
  const restored: string[] = [];
  const skipped: string[] = [];
  const warnings: string[] = [];
  for (const name of names.sort()) {
    const m = LEFTOVER.exec(name);
    const tempPid = name.startsWith(`.${LATEST_NAME}.`) ? atomicTempPid(name) : null;
    const pid = m ? Number(m[3]) : tempPid;
    if (pid === null) continue;
    if (pid !== process.pid && isAlive(pid)) {
      skipped.push(name);
      continue;
    }
    const path = join(ckDir, name);
    let restoring = false;
    try {
      if (m && m[1] === 'replaced') {
        const target = join(ckDir, `step-${m[2]}`);
        restoring = !(await exists(target));
        if (restoring) {
          await fs.rename(path, target);
          restored.push(name);
          continue;
        }
      }
      await fs.remove(path);
      removed.push(name);
    } catch (err) {
      const what = restoring
        ? `it holds the only copy of step-${m![2]}: fix its permissions and rerun, or move it back to step-${m![2]} by hand`
        : `remove it by hand (rm -rf ${path}); it is a leftover of an interrupted save or prune`;
      warnings.push(`cannot clean up ${path} (${errMessage(err)}); ${what}. Resuming goes on without it`);
    }
  }
  if (removed.length > 0 || restored.length > 0) await fs.syncDir(ckDir).catch(() => undefined);
  return { removed, restored, skipped, warnings };
}
