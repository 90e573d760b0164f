/**
 * API keys: what a key is, how it is checked, and the `KeyStore` interface the server asks on every
 * request (no caching of validity, so a revoked key fails on its next request). A key is
 * `knobs_` + 43 base64url characters (256 random bits); stores keep only its SHA-256, looked up by
 * the hash's first 8 bytes and compared whole in constant time.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

export const KEY_PREFIX = 'knobs_';
const KEY_PATTERN = /^knobs_[A-Za-z0-9_-]{43}$/;
/** Key names: what people and logs call a key (never the secret). */
export const KEY_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export interface KeyRecord {
  name: string;
  /** Requests per minute (sliding 60 s window); null: no limit. */
  rpm: number | null;
  /** Prompt plus completion tokens per UTC day; null: no limit. */
  tokensPerDay: number | null;
  /** Model ids this key may use; null: all. */
  models: string[] | null;
  /** May read /metrics. */
  admin: boolean;
  createdAt: string;
  revokedAt: string | null;
}

export interface KeySpec {
  name: string;
  rpm: number | null;
  tokensPerDay: number | null;
  models: string[] | null;
  admin: boolean;
}

/** A hold on quota made at admission; settled to the tokens actually used when the request ends. */
export interface Reservation {
  id: number;
  key: string;
  tokens: number;
}

export type Admit =
  | { ok: true; reservation: Reservation }
  | { ok: false; limit: 'rpm' | 'tokens_per_day'; retryAfterSeconds: number; detail: string };

export interface UsageRow {
  key: string;
  model: string;
  day: string;
  requests: number;
  promptTokens: number;
  completionTokens: number;
}

export interface KeyStore {
  /** Makes a key; the secret is returned here only. Throws when the name is taken. */
  create(spec: KeySpec): Promise<{ key: string; record: KeyRecord }>;
  list(): Promise<KeyRecord[]>;
  /** False when no live key has that name. */
  revoke(name: string): Promise<boolean>;
  /** The live key this secret belongs to, or null (unknown, malformed or revoked). */
  authenticate(secret: string): Promise<KeyRecord | null>;
  /**
   * Atomically counts one request against the key's rpm and reserves `tokens` against its day's
   * quota (usage plus open reservations), or says which limit refuses and for how long.
   */
  admit(key: KeyRecord, tokens: number, nowMs: number): Promise<Admit>;
  /** Ends a reservation and records what was used, per key and model. */
  settle(
    r: Reservation,
    used: { model: string; promptTokens: number; completionTokens: number },
    nowMs: number,
  ): Promise<void>;
  usage(): Promise<UsageRow[]>;
  close(): Promise<void>;
}

export function newKey(): string {
  return KEY_PREFIX + randomBytes(32).toString('base64url');
}

export function keyHash(secret: string): Buffer {
  return createHash('sha256').update(secret, 'utf8').digest();
}

/** Whether `secret` has the shape of a key (checked before any lookup). */
export const isKeyShaped = (secret: string): boolean => KEY_PATTERN.test(secret);

export function hashesEqual(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

/** The UTC day of `ms` (quota windows), and seconds until the next one. */
export const utcDay = (ms: number): string => new Date(ms).toISOString().slice(0, 10);
export const secondsToNextDay = (ms: number): number => Math.max(1, Math.ceil((86_400_000 - (ms % 86_400_000)) / 1000));
