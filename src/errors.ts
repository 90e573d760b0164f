/**
 * Typed errors. Every error knobs throws on purpose is a KnobsError with a stable `code`
 * (listed in docs/errors.md), a message that says what was wrong and what to do, and
 * machine-readable `details`.
 */
export type ErrorCode =
  'E_SHAPE' | 'E_DTYPE' | 'E_ARGUMENT' | 'E_AUTOGRAD' | 'E_BACKEND' | 'E_FORMAT' | 'E_IO' | 'E_USAGE' | 'E_KEY';

export class KnobsError extends Error {
  readonly code: ErrorCode;
  readonly details: Record<string, unknown>;
  constructor(code: ErrorCode, message: string, details: Record<string, unknown> = {}) {
    super(message);
    this.name = new.target.name;
    this.code = code;
    this.details = details;
  }
}

/**
 * What every ShapeError carries, so a program (the server, a test) can act on the fields instead
 * of the message: the op, module or function that raised it, and the shapes involved in argument
 * order (a requested shape counts: reshape's target, a module's expected input). More fields may
 * follow (`axis`, `expected`, …).
 */
export interface ShapeDetails {
  readonly op: string;
  readonly shapes: readonly (readonly number[])[];
  readonly [more: string]: unknown;
}

/** What every DTypeError carries: the op and the dtypes involved (names as given, even unknown ones). */
export interface DTypeDetails {
  readonly op: string;
  readonly dtypes: readonly string[];
  readonly [more: string]: unknown;
}

/** Shapes that do not fit together (broadcasting, matmul, reshape, axes). */
export class ShapeError extends KnobsError {
  declare readonly details: ShapeDetails;
  constructor(message: string, details: ShapeDetails) {
    super('E_SHAPE', message, details);
  }
}

/** A dtype an op cannot compute in, or two dtypes that do not mix. */
export class DTypeError extends KnobsError {
  declare readonly details: DTypeDetails;
  constructor(message: string, details: DTypeDetails) {
    super('E_DTYPE', message, details);
  }
}

/** An argument outside its allowed range (axis, probability, index, size). */
export class ArgumentError extends KnobsError {
  constructor(message: string, details: Record<string, unknown> = {}) {
    super('E_ARGUMENT', message, details);
  }
}

/** Misuse of the gradient tape (backward on a non-scalar, on a tensor without grad, …). */
export class AutogradError extends KnobsError {
  constructor(message: string, details: Record<string, unknown> = {}) {
    super('E_AUTOGRAD', message, details);
  }
}

/** A backend that is missing, failed to load, or cannot run an op. */
export class BackendError extends KnobsError {
  constructor(message: string, details: Record<string, unknown> = {}) {
    super('E_BACKEND', message, details);
  }
}

/**
 * An invalid file. `rule` names the validation rule that failed (stable, e.g. `header_too_large`),
 * so tests and callers can tell failures apart without parsing the message.
 */
export class FormatError extends KnobsError {
  readonly rule: string;
  constructor(rule: string, message: string, details: Record<string, unknown> = {}) {
    super('E_FORMAT', message, { rule, ...details });
    this.rule = rule;
  }
}

/** A file-system failure (missing file, permission, disk full), with the path involved. */
export class IOError extends KnobsError {
  constructor(message: string, details: Record<string, unknown> = {}) {
    super('E_IO', message, details);
  }
}

/** Bad command-line usage: unknown flag, missing argument. CLI exit code 2. */
export class UsageError extends KnobsError {
  constructor(message: string, details: Record<string, unknown> = {}) {
    super('E_USAGE', message, details);
  }
}

/**
 * A master key that is missing, malformed, or does not open a sealed model. Messages name where
 * the key came from (a file, KNOBS_MASTER_KEY), never the key itself.
 */
export class KeyError extends KnobsError {
  constructor(message: string, details: Record<string, unknown> = {}) {
    super('E_KEY', message, details);
  }
}
