// Microphone capture: the AudioContext's input (any rate, any channel count) as
// PCM16 mono little-endian at 24 kHz, posted to the page in chunks of `chunkMs`.
//
// Resampling: a low-pass biquad (RBJ cookbook, cut-off at 0.45 x the target
// rate) runs at the input rate when downsampling, then the filtered signal is
// read at fractional positions with linear interpolation.  Filter state, the
// leftover input sample and the read position carry over from one render quantum
// to the next, so chunks join without clicks.

class Pcm16Capture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = (options && options.processorOptions) || {};
    this.targetRate = opts.targetRate || 24000;
    this.step = sampleRate / this.targetRate; // input samples per output sample
    const chunkMs = opts.chunkMs || 40;
    this.chunkSize = Math.round((this.targetRate * chunkMs) / 1000);
    this.chunk = new Int16Array(this.chunkSize);
    this.fill = 0;
    this.pos = 0; // read position, in input samples, relative to `this.prev`
    this.prev = 0; // the last filtered input sample of the previous quantum
    this.filter = this.step > 1 ? lowPass(0.45 * this.targetRate, sampleRate) : null;
    this.z1 = 0;
    this.z2 = 0;
  }

  process(inputs) {
    const input = inputs[0];
    if (!input || input.length === 0 || input[0].length === 0) {
      return true;
    }
    const frames = input[0].length;
    // Index 0 is the previous quantum's last sample; 1..frames this quantum's.
    const data = new Float32Array(frames + 1);
    data[0] = this.prev;
    const channels = input.length;
    const f = this.filter;
    for (let i = 0; i < frames; i++) {
      let x = 0;
      for (let c = 0; c < channels; c++) {
        x += input[c][i];
      }
      x /= channels;
      if (f) {
        // transposed direct form II
        const y = f.b0 * x + this.z1;
        this.z1 = f.b1 * x - f.a1 * y + this.z2;
        this.z2 = f.b2 * x - f.a2 * y;
        x = y;
      }
      data[i + 1] = x;
    }
    let pos = this.pos;
    while (pos < frames) {
      const i = Math.floor(pos);
      const frac = pos - i;
      this.push(data[i] + (data[i + 1] - data[i]) * frac);
      pos += this.step;
    }
    this.pos = pos - frames;
    this.prev = data[frames];
    return true;
  }

  push(value) {
    const v = value > 1 ? 1 : value < -1 ? -1 : value;
    this.chunk[this.fill++] = v < 0 ? Math.round(v * 0x8000) : Math.round(v * 0x7fff);
    if (this.fill === this.chunkSize) {
      const out = this.chunk.buffer;
      this.port.postMessage(out, [out]); // transferred: this.chunk is detached now
      this.chunk = new Int16Array(this.chunkSize);
      this.fill = 0;
    }
  }
}

function lowPass(cutoff, rate) {
  const w = (2 * Math.PI * cutoff) / rate;
  const alpha = Math.sin(w) / (2 * Math.SQRT1_2); // Q = 1/sqrt(2)
  const cos = Math.cos(w);
  const a0 = 1 + alpha;
  return {
    b0: (1 - cos) / 2 / a0,
    b1: (1 - cos) / a0,
    b2: (1 - cos) / 2 / a0,
    a1: (-2 * cos) / a0,
    a2: (1 - alpha) / a0,
  };
}

registerProcessor("pcm16-capture", Pcm16Capture);
