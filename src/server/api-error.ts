/**
 * Errors the HTTP API answers with, shaped as OpenAI's: `{"error": {"message", "type", "param",
 * "code"}}` with the HTTP status. `code` is stable (docs/server.md lists them); messages say what
 * was wrong and what to do, and never contain a key.
 */
export type ApiErrorType =
  | 'invalid_request_error'
  | 'authentication_error'
  | 'permission_error'
  | 'not_found_error'
  | 'rate_limit_error'
  | 'server_error';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly type: ApiErrorType,
    readonly code: string,
    message: string,
    readonly param: string | null = null,
    /** Extra response headers (Retry-After, WWW-Authenticate). */
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = 'ApiError';
  }

  body(): { error: { message: string; type: string; param: string | null; code: string } } {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

export const invalidRequest = (code: string, message: string, param: string | null = null): ApiError =>
  new ApiError(400, 'invalid_request_error', code, message, param);
