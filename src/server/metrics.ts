/** The batching engine for /metrics: KV cache blocks held by requests, free (cached blocks included) and cached, its counters, and its sequences. */
export interface KvCacheGauges {
  used: number;
  free: number;
  cached: number;
  reusedPromptTokens: number;
  preemptions: number;
  /** Sequences in the batching engine: decoding or reading their prompt, and waiting to be admitted. */
  running: number;
  waiting: number;
}

/** The server's counters, written in Prometheus' text format for GET /metrics (admin keys only). */
export class Metrics {
  private readonly requests = new Map<string, number>();
  promptTokens = 0;
  completionTokens = 0;
  cancelled = 0;
  durationSum = 0;
  durationCount = 0;

  countRequest(route: string, status: number, seconds: number): void {
    const label = `route="${route}",status="${status}"`;
    this.requests.set(label, (this.requests.get(label) ?? 0) + 1);
    this.durationSum += seconds;
    this.durationCount++;
  }

  /** `kvBlocks`: the batching engine's KV cache blocks, when it runs. */
  render(gauges: { active: number; queued: number; kvBlocks?: KvCacheGauges }): string {
    const lines = [
      '# HELP knobs_requests_total HTTP requests answered, by route and status.',
      '# TYPE knobs_requests_total counter',
      ...[...this.requests].map(([labels, n]) => `knobs_requests_total{${labels}} ${n}`),
      '# HELP knobs_request_duration_seconds Time from request to the end of the response.',
      '# TYPE knobs_request_duration_seconds summary',
      `knobs_request_duration_seconds_sum ${this.durationSum}`,
      `knobs_request_duration_seconds_count ${this.durationCount}`,
      '# HELP knobs_tokens_total Tokens processed.',
      '# TYPE knobs_tokens_total counter',
      `knobs_tokens_total{kind="prompt"} ${this.promptTokens}`,
      `knobs_tokens_total{kind="completion"} ${this.completionTokens}`,
      '# HELP knobs_generations_cancelled_total Generations stopped by a client leaving or a deadline.',
      '# TYPE knobs_generations_cancelled_total counter',
      `knobs_generations_cancelled_total ${this.cancelled}`,
      '# HELP knobs_generations_active Generations running now.',
      '# TYPE knobs_generations_active gauge',
      `knobs_generations_active ${gauges.active}`,
      '# HELP knobs_generations_queued Requests waiting for a slot.',
      '# TYPE knobs_generations_queued gauge',
      `knobs_generations_queued ${gauges.queued}`,
    ];
    if (gauges.kvBlocks)
      lines.push(
        '# HELP knobs_kv_cache_blocks KV cache blocks of the batching engine, in use by running requests or free.',
        '# TYPE knobs_kv_cache_blocks gauge',
        `knobs_kv_cache_blocks{state="used"} ${gauges.kvBlocks.used}`,
        `knobs_kv_cache_blocks{state="free"} ${gauges.kvBlocks.free}`,
        '# HELP knobs_kv_cache_prefix_blocks Free blocks that still hold whole blocks of an earlier request (prompt or answer), reused by a request that starts the same way.',
        '# TYPE knobs_kv_cache_prefix_blocks gauge',
        `knobs_kv_cache_prefix_blocks ${gauges.kvBlocks.cached}`,
        "# HELP knobs_kv_cache_reused_prompt_tokens_total Positions read from the prefix cache instead of computed: prompt tokens, and a preempted request's own tokens each time it comes back.",
        '# TYPE knobs_kv_cache_reused_prompt_tokens_total counter',
        `knobs_kv_cache_reused_prompt_tokens_total ${gauges.kvBlocks.reusedPromptTokens}`,
        '# HELP knobs_kv_cache_preemptions_total Running requests sent back to the queue (to be computed again) because another found no free KV cache block.',
        '# TYPE knobs_kv_cache_preemptions_total counter',
        `knobs_kv_cache_preemptions_total ${gauges.kvBlocks.preemptions}`,
        '# HELP knobs_batch_sequences Sequences in the batching engine: running (in the batch) or waiting to be admitted (for KV cache room, or for prompt blocks another request is computing; preempted ones included).',
        '# TYPE knobs_batch_sequences gauge',
        `knobs_batch_sequences{state="running"} ${gauges.kvBlocks.running}`,
        `knobs_batch_sequences{state="waiting"} ${gauges.kvBlocks.waiting}`,
      );
    return lines.join('\n') + '\n';
  }
}
