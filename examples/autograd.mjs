// A short autograd example: fit y = 3x − 2 with plain gradient descent on knobs tensors.
import * as k from '../dist/src/index.js';

const gen = new k.Generator(0);
const x = k.randn([256, 1], { generator: gen });
const y = k.add(k.mul(x, 3), -2);
const w = k.zeros([1, 1], { requiresGrad: true });
const b = k.zeros([1], { requiresGrad: true });

for (let step = 0; step <= 100; step++) {
  const pred = k.add(k.matmul(x, w), b);
  const loss = k.mean(k.pow(k.sub(pred, y), 2));
  w.grad = null;
  b.grad = null;
  loss.backward();
  k.noGrad(() => {
    // SGD by hand: the optimizers in knobs do this for you.
    w.storage.set(k.sub(w, k.mul(w.grad, 0.1)).storage);
    b.storage.set(k.sub(b, k.mul(b.grad, 0.1)).storage);
  });
  if (step % 25 === 0) console.log(`step ${step}: loss ${loss.item().toFixed(6)}`);
}
console.log(`learned w = ${w.item().toFixed(4)}, b = ${b.item().toFixed(4)} (true: 3, -2)`);
