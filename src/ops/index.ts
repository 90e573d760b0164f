/** The functional op API. */
export * from './creation.js';
export * from './view.js';
export * from './elementwise.js';
export * from './reduce.js';
export * from './linalg.js';
export * from './linear.js';
export * from './shape-ops.js';
export * from './nn.js';
export * from './conv.js';
export * from './quantized.js';
