/// <reference lib="dom" />
/**
 * The explorer page (entry of the browser bundle): loads a golden fixture, runs dsv32 on the backend
 * named in the URL (`?backend=webgpu|webgl|wasm|cpu`, default webgpu when the browser has it, else
 * webgl) and shows one layer at one step (src/browser/compute.ts, src/browser/render.ts).
 *
 * For tests and scripts the page publishes its state as `window.dsv32Explorer`:
 * `{ status: 'loading' | 'computing' | 'ready' | 'error', error?, backend, adapter, view }`.
 *
 * Keyboard: every control is a native select; in addition ↑/↓ (or k/j) move the query row,
 * [ / ] the step, , / . the layer, h the head, when the focus is not in a select.
 *
 * @module
 */
import { tf } from '../backend.ts';
import '@tensorflow/tfjs-backend-webgpu';
import { setWasmPaths } from '@tensorflow/tfjs-backend-wasm';
import { computeView, type ExplorerView, type OpenFixture } from './compute.ts';
import { FIXTURES, loadFixture } from './load.ts';
import { describeAdapter } from './adapter.ts';
import { attentionHtml, backendHtml, drawHeatmap, routingHtml, selectionHtml } from './render.ts';

/** Backends the page can run on. */
const BACKENDS = ['webgpu', 'webgl', 'wasm', 'cpu'] as const;

interface ExplorerState {
  status: 'loading' | 'computing' | 'ready' | 'error';
  error?: string;
  backend?: string;
  adapter?: string;
  view?: ExplorerView;
}
const state: ExplorerState = { status: 'loading' };
(window as unknown as { dsv32Explorer: ExplorerState }).dsv32Explorer = state;

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const params = new URL(location.href).searchParams;

function options(select: HTMLSelectElement, values: readonly (string | number)[], selected: string | number, label = (v: string | number) => String(v)): void {
  select.innerHTML = values.map((v) => `<option value="${v}"${String(v) === String(selected) ? ' selected' : ''}>${label(v)}</option>`).join('');
}

async function startBackend(): Promise<string> {
  setWasmPaths(new URL('./wasm/', location.href).href);
  const wanted = params.get('backend') ?? ('gpu' in navigator ? 'webgpu' : 'webgl');
  if (!(BACKENDS as readonly string[]).includes(wanted)) throw new Error(`?backend must be one of ${BACKENDS.join(', ')} but got '${wanted}'`);
  if (!(await tf.setBackend(wanted))) throw new Error(`the ${wanted} backend could not start in this browser`);
  await tf.ready();
  return wanted;
}

let fixture: OpenFixture;
let view: ExplorerView | undefined;
let row = 0;

async function recompute(): Promise<void> {
  const step = Number($<HTMLSelectElement>('step').value);
  const layer = Number($<HTMLSelectElement>('layer').value);
  const head = Number($<HTMLSelectElement>('head').value);
  state.status = 'computing';
  $('status').textContent = `computing step ${step}, layer ${layer} on ${state.backend}…`;
  const t0 = performance.now();
  view = await computeView(fixture, step, layer, head);
  const ms = performance.now() - t0;
  row = Math.min(Math.max(0, Number(params.get('row') ?? view.T - 1)), view.T - 1);
  options($<HTMLSelectElement>('row'), Array.from({ length: view.T }, (_, i) => i), row, (i) => `t = ${view!.startPos + Number(i)}`);
  $('backend').innerHTML = backendHtml(state.backend!, state.adapter!, ms);
  $('status').textContent = `step ${step}: ${view.T} ${view.T > 1 ? 'queries (prefill)' : 'query (decode)'} at positions ${view.startPos}..${view.S - 1}`;
  $('moe').innerHTML = routingHtml(view, fixture.config.first_k_dense_replace);
  drawRow();
  state.view = view;
  state.status = 'ready';
}

function drawRow(): void {
  if (!view) return;
  $<HTMLSelectElement>('row').value = String(row);
  drawHeatmap($<HTMLCanvasElement>('heatmap'), view, row);
  $('selection').innerHTML = selectionHtml(view, row);
  $('attention').innerHTML = attentionHtml(view, row);
}

function step(select: HTMLSelectElement, by: number): void {
  const i = Math.min(select.options.length - 1, Math.max(0, select.selectedIndex + by));
  if (i === select.selectedIndex) return;
  select.selectedIndex = i;
  select.dispatchEvent(new Event('change'));
}

function keyboard(e: KeyboardEvent): void {
  if (e.target instanceof HTMLSelectElement || e.altKey || e.ctrlKey || e.metaKey) return;
  const keys: Record<string, () => void> = {
    ArrowUp: () => step($('row'), -1), k: () => step($('row'), -1),
    ArrowDown: () => step($('row'), 1), j: () => step($('row'), 1),
    '[': () => step($('step'), -1), ']': () => step($('step'), 1),
    ',': () => step($('layer'), -1), '.': () => step($('layer'), 1),
    h: () => {
      const s = $<HTMLSelectElement>('head');
      s.selectedIndex = (s.selectedIndex + 1) % s.options.length;
      s.dispatchEvent(new Event('change'));
    },
  };
  const f = keys[e.key];
  if (f) {
    e.preventDefault();
    f();
  }
}

function fail(e: unknown): void {
  state.status = 'error';
  state.error = (e as Error).message ?? String(e);
  $('status').textContent = `error: ${state.error}`;
  $('status').className = 'bad';
}

async function main(): Promise<void> {
  state.backend = await startBackend();
  state.adapter = await describeAdapter(state.backend);
  const name = params.get('fixture') ?? FIXTURES[0];
  if (!(FIXTURES as readonly string[]).includes(name)) throw new Error(`?fixture must be one of ${FIXTURES.join(', ')} but got '${name}'`);
  options($<HTMLSelectElement>('fixture'), FIXTURES, name);
  options($<HTMLSelectElement>('backend-select'), BACKENDS, state.backend);
  $('status').textContent = `loading ${name}…`;
  fixture = await loadFixture(name, location.href);
  const steps = fixture.manifest.steps.map((s) => s.step);
  options($<HTMLSelectElement>('step'), steps, params.get('step') ?? steps[0]!, (s) => {
    const st = fixture.manifest.steps.find((x) => x.step === Number(s))!;
    return `${s} (${st.length > 1 ? `prefill ${st.length}` : `decode at ${st.start_pos}`})`;
  });
  options($<HTMLSelectElement>('layer'), Array.from({ length: fixture.config.num_hidden_layers }, (_, i) => i), params.get('layer') ?? 0,
    (l) => `${l} (${Number(l) < fixture.config.first_k_dense_replace ? 'dense' : 'MoE'})`);
  options($<HTMLSelectElement>('head'), Array.from({ length: fixture.config.num_attention_heads }, (_, i) => i), params.get('head') ?? 0);
  const reload = (key: string) => (e: Event) => {
    params.set(key, (e.target as HTMLSelectElement).value);
    location.search = params.toString();
  };
  $('fixture').addEventListener('change', reload('fixture'));
  $('backend-select').addEventListener('change', reload('backend'));
  for (const id of ['step', 'layer', 'head']) $(id).addEventListener('change', () => void recompute().catch(fail));
  $('row').addEventListener('change', (e) => {
    row = Number((e.target as HTMLSelectElement).value);
    drawRow();
  });
  $('heatmap').addEventListener('click', (e) => {
    if (!view) return;
    const canvas = e.target as HTMLCanvasElement;
    row = Math.min(view.T - 1, Math.floor((e.offsetY / canvas.clientHeight) * view.T));
    drawRow();
  });
  document.addEventListener('keydown', keyboard);
  await recompute();
}

main().catch(fail);
