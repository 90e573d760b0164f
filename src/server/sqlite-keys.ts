/**
 * The embedded KeyStore: one SQLite file (better-sqlite3; synchronous calls, wrapped in the async
 * interface so a networked store can replace it). Admission runs in an IMMEDIATE transaction, so
 * concurrent requests (and `knobs keys` in another process) cannot both take the last of a quota.
 */
import { closeSync, openSync } from 'node:fs';
import Database from 'better-sqlite3';
import { BackendError, IOError, UsageError } from '../errors.js';
import {
  type Admit,
  type KeyRecord,
  type KeySpec,
  type KeyStore,
  type Reservation,
  type UsageRow,
  hashesEqual,
  isKeyShaped,
  keyHash,
  newKey,
  secondsToNextDay,
  utcDay,
} from './keys.js';

const SCHEMA = `
CREATE TABLE IF NOT EXISTS keys (
  name TEXT PRIMARY KEY,
  lookup TEXT NOT NULL UNIQUE,   -- hex of the first 8 bytes of hash
  hash BLOB NOT NULL,            -- SHA-256 of the key
  rpm INTEGER,
  tokens_per_day INTEGER,
  models TEXT,                   -- JSON array, or NULL for all
  admin INTEGER NOT NULL,
  created_at TEXT NOT NULL,
  revoked_at TEXT
);
CREATE TABLE IF NOT EXISTS admissions (key TEXT NOT NULL, at_ms INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS admissions_key ON admissions (key, at_ms);
CREATE TABLE IF NOT EXISTS reservations (id INTEGER PRIMARY KEY, key TEXT NOT NULL, day TEXT NOT NULL, tokens INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS usage (
  key TEXT NOT NULL, model TEXT NOT NULL, day TEXT NOT NULL,
  requests INTEGER NOT NULL, prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,
  PRIMARY KEY (key, model, day)
);`;

interface KeyRow {
  name: string;
  hash: Buffer;
  rpm: number | null;
  tokens_per_day: number | null;
  models: string | null;
  admin: number;
  created_at: string;
  revoked_at: string | null;
}

const toRecord = (r: KeyRow): KeyRecord => ({
  name: r.name,
  rpm: r.rpm,
  tokensPerDay: r.tokens_per_day,
  models: r.models === null ? null : (JSON.parse(r.models) as string[]),
  admin: r.admin === 1,
  createdAt: r.created_at,
  revokedAt: r.revoked_at,
});

/**
 * better-sqlite3 installed without its compiled binding — `npm ci --ignore-scripts`, as the quick
 * start installs, skips that build: a typed error saying how to build it, or undefined for any other error.
 */
export function missingSqliteBinding(err: unknown): BackendError | undefined {
  if (!(err instanceof Error) || !err.message.startsWith('Could not locate the bindings file')) return undefined;
  return new BackendError(
    "SQLite's native binding (better-sqlite3) is not built, and 'knobs serve' and 'knobs keys' keep API keys in SQLite: run 'npm rebuild better-sqlite3' (an install with --ignore-scripts, as the quick start's, skips that build)",
    { package: 'better-sqlite3' },
  );
}

export class SqliteKeyStore implements KeyStore {
  private constructor(private readonly db: Database.Database) {}

  /** Opens FILE (`create`: making it, readable by its owner only, when missing). */
  static open(path: string, opts: { create: boolean }): SqliteKeyStore {
    try {
      if (opts.create) closeSync(openSync(path, 'a', 0o600));
      const db = new Database(path, { fileMustExist: true });
      db.pragma('journal_mode = WAL');
      db.pragma('busy_timeout = 5000');
      db.exec(SCHEMA);
      return new SqliteKeyStore(db);
    } catch (err) {
      const missing = missingSqliteBinding(err);
      if (missing) throw missing;
      const e = err as NodeJS.ErrnoException;
      if (e.code === 'SQLITE_CANTOPEN' || e.code === 'ENOENT')
        throw new IOError(
          `cannot open the key file ${path}; create it with 'knobs keys create --keys ${path} --name NAME'`,
          { path },
        );
      if (typeof e.code === 'string' && e.code.startsWith('SQLITE_'))
        throw new IOError(`${path} is not a knobs key file (${e.code}); pass the file 'knobs keys create' made`, {
          path,
        });
      throw err;
    }
  }

  /** Drops reservations a stopped server left open (one server per file until a shared store lands). */
  clearReservations(): void {
    this.db.prepare('DELETE FROM reservations').run();
  }

  async create(spec: KeySpec): Promise<{ key: string; record: KeyRecord }> {
    const key = newKey();
    const hash = keyHash(key);
    const createdAt = new Date().toISOString();
    const taken = this.db.prepare('SELECT 1 FROM keys WHERE name = ?').get(spec.name);
    if (taken)
      throw new UsageError(
        `a key named '${spec.name}' already exists (names stay taken after revoke); pick another name`,
      );
    this.db
      .prepare(
        'INSERT INTO keys (name, lookup, hash, rpm, tokens_per_day, models, admin, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
      )
      .run(
        spec.name,
        hash.subarray(0, 8).toString('hex'),
        hash,
        spec.rpm,
        spec.tokensPerDay,
        spec.models === null ? null : JSON.stringify(spec.models),
        spec.admin ? 1 : 0,
        createdAt,
      );
    return { key, record: { ...spec, createdAt, revokedAt: null } };
  }

  async list(): Promise<KeyRecord[]> {
    return (this.db.prepare('SELECT * FROM keys ORDER BY created_at, name').all() as KeyRow[]).map(toRecord);
  }

  async revoke(name: string): Promise<boolean> {
    const r = this.db
      .prepare('UPDATE keys SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL')
      .run(new Date().toISOString(), name);
    return r.changes === 1;
  }

  async authenticate(secret: string): Promise<KeyRecord | null> {
    if (!isKeyShaped(secret)) return null;
    const hash = keyHash(secret);
    const row = this.db.prepare('SELECT * FROM keys WHERE lookup = ?').get(hash.subarray(0, 8).toString('hex')) as
      KeyRow | undefined;
    if (!row || !hashesEqual(row.hash, hash) || row.revoked_at !== null) return null;
    return toRecord(row);
  }

  async admit(key: KeyRecord, tokens: number, nowMs: number): Promise<Admit> {
    return this.db
      .transaction((): Admit => {
        const db = this.db;
        db.prepare('DELETE FROM admissions WHERE key = ? AND at_ms <= ?').run(key.name, nowMs - 60_000);
        if (key.rpm !== null) {
          const w = db
            .prepare('SELECT COUNT(*) AS n, MIN(at_ms) AS oldest FROM admissions WHERE key = ?')
            .get(key.name) as {
            n: number;
            oldest: number | null;
          };
          if (w.n >= key.rpm)
            return {
              ok: false,
              limit: 'rpm',
              retryAfterSeconds: Math.max(1, Math.ceil(((w.oldest ?? nowMs) + 60_000 - nowMs) / 1000)),
              detail: `${key.rpm} requests per minute`,
            };
        }
        const day = utcDay(nowMs);
        if (key.tokensPerDay !== null) {
          const used = db
            .prepare(
              `SELECT (SELECT COALESCE(SUM(prompt_tokens + completion_tokens), 0) FROM usage WHERE key = @key AND day = @day)
                    + (SELECT COALESCE(SUM(tokens), 0) FROM reservations WHERE key = @key AND day = @day) AS used`,
            )
            .get({ key: key.name, day }) as { used: number };
          if (used.used + tokens > key.tokensPerDay)
            return {
              ok: false,
              limit: 'tokens_per_day',
              retryAfterSeconds: secondsToNextDay(nowMs),
              detail: `${key.tokensPerDay} tokens per day: ${used.used} used or reserved today, this request may take ${tokens}`,
            };
        }
        db.prepare('INSERT INTO admissions (key, at_ms) VALUES (?, ?)').run(key.name, nowMs);
        const r = db.prepare('INSERT INTO reservations (key, day, tokens) VALUES (?, ?, ?)').run(key.name, day, tokens);
        return { ok: true, reservation: { id: Number(r.lastInsertRowid), key: key.name, tokens } };
      })
      .immediate();
  }

  async settle(
    r: Reservation,
    used: { model: string; promptTokens: number; completionTokens: number },
    nowMs: number,
  ): Promise<void> {
    this.db
      .transaction(() => {
        // The day the reservation was made, so a request that crosses midnight is counted once.
        const held = this.db.prepare('SELECT day FROM reservations WHERE id = ?').get(r.id) as
          { day: string } | undefined;
        this.db.prepare('DELETE FROM reservations WHERE id = ?').run(r.id);
        this.db
          .prepare(
            `INSERT INTO usage (key, model, day, requests, prompt_tokens, completion_tokens) VALUES (?, ?, ?, 1, ?, ?)
             ON CONFLICT (key, model, day) DO UPDATE SET requests = requests + 1,
               prompt_tokens = prompt_tokens + excluded.prompt_tokens, completion_tokens = completion_tokens + excluded.completion_tokens`,
          )
          .run(r.key, used.model, held?.day ?? utcDay(nowMs), used.promptTokens, used.completionTokens);
      })
      .immediate();
  }

  async usage(): Promise<UsageRow[]> {
    const rows = this.db.prepare('SELECT * FROM usage ORDER BY day, key, model').all() as {
      key: string;
      model: string;
      day: string;
      requests: number;
      prompt_tokens: number;
      completion_tokens: number;
    }[];
    return rows.map((u) => ({
      key: u.key,
      model: u.model,
      day: u.day,
      requests: u.requests,
      promptTokens: u.prompt_tokens,
      completionTokens: u.completion_tokens,
    }));
  }

  async close(): Promise<void> {
    this.db.close();
  }
}
