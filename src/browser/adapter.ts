/// <reference lib="dom" />
/**
 * Which device a TensorFlow.js backend computes on, in one line for people: the WebGPU adapter's
 * info, the WebGL renderer string, or the wasm features. Browser-only.
 *
 * @module
 */
import { tf } from '../backend.ts';

/** What the adapter is: WebGPU adapter info, the WebGL renderer string, or the wasm features. */
export async function describeAdapter(backend: string): Promise<string> {
  if (backend === 'webgpu') {
    const gpu = (navigator as unknown as { gpu?: { requestAdapter(): Promise<{ info?: Record<string, string> } | null> } }).gpu;
    const info = (await gpu?.requestAdapter())?.info;
    return info ? `WebGPU adapter: ${[info.vendor, info.architecture, info.device, info.description].filter(Boolean).join(' / ')}` : 'WebGPU adapter: (no info)';
  }
  if (backend === 'webgl') {
    const gl = document.createElement('canvas').getContext('webgl2');
    const ext = gl?.getExtension('WEBGL_debug_renderer_info');
    return `WebGL ${tf.env().getNumber('WEBGL_VERSION')}: ${ext ? gl!.getParameter(ext.UNMASKED_RENDERER_WEBGL) : gl?.getParameter(gl.RENDERER) ?? 'unknown'}`;
  }
  if (backend === 'wasm') return `WebAssembly, SIMD ${tf.env().getBool('WASM_HAS_SIMD_SUPPORT') ? 'on' : 'off'}, threads ${tf.env().getBool('WASM_HAS_MULTITHREAD_SUPPORT') ? 'on' : 'off'}`;
  return 'plain JavaScript';
}

