/**
 * Sealed models (docs/sealing.md), two rows:
 *
 * - seal_decrypt: openSealed on a sealed 64 MiB file of random bytes (1 MiB chunks, warm page
 *   cache: reading the blob, checking each chunk's tag, copying into the file's buffer), in GB/s
 *   of plaintext. The peer is the ceiling: node:crypto's AES-256-GCM decrypting the same 64 MiB
 *   from memory in one call (the same OpenSSL code, no chunking, no file reads).
 *   A second row puts the same knobs number against `openssl speed -evp aes-256-gcm` on 1 MiB
 *   blocks (the system's libcrypto, with AES-NI where the CPU has it): on the machine this was
 *   written on, node's bundled OpenSSL decrypts at ~0.2 GB/s, as openssl speed does with AES-NI
 *   masked off (OPENSSL_ia32cap), against ~3.5 GB/s with it — the gap is node's crypto, not sealing.
 * - seal_load: loadHfModel of a sealed GPT-2 directory (each tensor decrypted chunk by chunk as it is
 *   read) against the plain directory on disk, in seconds: what sealing costs a model's start.
 *
 * node:crypto runs on the calling thread, so both sides use one core whatever the setting; the
 * rows are reported once, for cores=all. Runs alternate (knobs, peer, …); medians are reported.
 */
import { spawnSync } from 'node:child_process';
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { saveSafetensors } from '../src/formats/safetensors.js';
import { loadHfModel } from '../src/models/hf/load.js';
import { GPT } from '../src/models/gpt.js';
import { withoutInit } from '../src/nn/init.js';
import { openSealed, sealedFiles } from '../src/seal/open.js';
import { sealModel } from '../src/seal/seal.js';
import { type BenchOptions, type BenchRow, makeRow, median } from './row.js';
import { notes } from './train-step.js';

const FILE_BYTES = 64 << 20;
const ROUNDS = 5;
const CONFIG = {
  model_type: 'gpt2',
  vocab_size: 8000,
  n_positions: 512,
  n_embd: 256,
  n_layer: 4,
  n_head: 4,
  layer_norm_epsilon: 1e-5,
  activation_function: 'gelu_new',
  tie_word_embeddings: true,
  bos_token_id: 0,
  eos_token_id: 0,
};

/** GB/s of `openssl speed -evp aes-256-gcm` on 1 MiB blocks for one second, or null without openssl. */
function opensslSpeed(): { gbps: number; version: string } | null {
  const version = spawnSync('openssl', ['version'], { encoding: 'utf8' });
  if (version.status !== 0) return null;
  const r = spawnSync('openssl', ['speed', '-evp', 'aes-256-gcm', '-seconds', '1', '-bytes', String(1 << 20)], {
    encoding: 'utf8',
  });
  const kb = /AES-256-GCM\s+([\d.]+)k/.exec(r.stdout)?.[1];
  return kb === undefined
    ? null
    : { gbps: Number(kb) / 1e6, version: version.stdout.trim().split(' ').slice(0, 2).join(' ') };
}

async function seconds(f: () => Promise<unknown> | unknown): Promise<number> {
  const t0 = process.hrtime.bigint();
  await f();
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

export async function run(opts: BenchOptions): Promise<BenchRow[]> {
  if (opts.cores === 1) return [];
  const root = await mkdtemp(join(tmpdir(), 'knobs-bench-seal-'));
  try {
    const key = randomBytes(32);
    // seal_decrypt: one random file, sealed.
    const plainDir = join(root, 'plain');
    await mkdir(plainDir);
    const data = randomBytes(FILE_BYTES);
    await writeFile(join(plainDir, 'weights.bin'), data);
    await sealModel(plainDir, join(root, 'sealed'), key);
    const dataKey = randomBytes(32);
    const nonce = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', dataKey, nonce);
    const whole = Buffer.concat([cipher.update(data), cipher.final()]);
    const tag = cipher.getAuthTag();
    const knobsDecrypt: number[] = [];
    const peerDecrypt: number[] = [];
    const opensslDecrypt: number[] = [];
    let openssl = '';
    await openSealed(join(root, 'sealed'), key); // warm the page cache
    for (let i = 0; i < ROUNDS; i++) {
      knobsDecrypt.push(FILE_BYTES / (await seconds(() => openSealed(join(root, 'sealed'), key))) / 1e9);
      peerDecrypt.push(
        FILE_BYTES /
          (await seconds(() => {
            const d = createDecipheriv('aes-256-gcm', dataKey, nonce);
            d.setAuthTag(tag);
            Buffer.concat([d.update(whole), d.final()]);
          })) /
          1e9,
      );
      const speed = opensslSpeed();
      if (speed) {
        opensslDecrypt.push(speed.gbps);
        openssl = speed.version;
      }
    }

    // seal_load: a GPT-2 directory, plain and sealed.
    const model = join(root, 'gpt2');
    await mkdir(model);
    await writeFile(join(model, 'config.json'), JSON.stringify(CONFIG));
    const weights = withoutInit(() => new GPT(CONFIG).stateDict());
    await saveSafetensors(join(model, 'model.safetensors'), Object.fromEntries(weights));
    await sealModel(model, join(root, 'gpt2-sealed'), key);
    const loadSealed = async () => loadHfModel(await sealedFiles(join(root, 'gpt2-sealed'), key));
    await loadSealed();
    await loadHfModel(model);
    const knobsLoad: number[] = [];
    const plainLoad: number[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      knobsLoad.push(await seconds(loadSealed));
      plainLoad.push(await seconds(() => loadHfModel(model)));
    }
    const mb = Math.round([...weights.values()].reduce((s, t) => s + 4 * t.size, 0) / 1e6);
    notes.push(
      `seal: decryption and loading run on one thread (node:crypto); decrypt peer = one AES-256-GCM call over the same ${FILE_BYTES >> 20} MiB in memory (OpenSSL ${process.versions.openssl}), the ceiling; load peer = the same ${mb} MB GPT-2 directory unsealed`,
    );
    return [
      makeRow(
        `seal_decrypt_${FILE_BYTES >> 20}mib`,
        'all',
        'GB/s',
        median(knobsDecrypt),
        `node:crypto aes-256-gcm one call (OpenSSL ${process.versions.openssl})`,
        median(peerDecrypt),
        true,
      ),
      ...(opensslDecrypt.length === 0
        ? []
        : [
            makeRow(
              `seal_decrypt_${FILE_BYTES >> 20}mib`,
              'all',
              'GB/s',
              median(knobsDecrypt),
              `openssl speed -evp aes-256-gcm, 1 MiB blocks (${openssl})`,
              median(opensslDecrypt),
              true,
            ),
          ]),
      makeRow(
        `seal_load_gpt2_${mb}mb_f32`,
        'all',
        's',
        median(knobsLoad),
        'knobs plain directory',
        median(plainLoad),
        false,
      ),
    ];
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}
