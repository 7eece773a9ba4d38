/**
 * Hand-rolled SVG charts for BENCHMARKS.md: horizontal bars (linear or log scale) with
 * optional vertical reference lines. No dependencies.
 *
 * @module
 */

export interface Bar {
  label: string;
  value: number;
  color?: string;
  note?: string;
}

export interface Group {
  label: string;
  bars: Bar[];
}

export interface ChartOptions {
  title: string;
  unit: string;
  groups: Group[];
  log?: boolean;
  refs?: { value: number; label: string; color?: string }[];
  width?: number;
}

const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
const fmt = (v: number) =>
  !Number.isFinite(v) ? "–" : v >= 100 ? Math.round(v).toLocaleString("en-US") : v >= 10 ? v.toFixed(1) : v.toFixed(2);

export function barChart(o: ChartOptions): string {
  const width = o.width ?? 760;
  const labelW = 250;
  const right = 90;
  const barH = 16;
  const gap = 4;
  const groupGap = 14;
  const top = 44;
  const plotW = width - labelW - right;
  const values = o.groups.flatMap((g) => g.bars.map((b) => b.value)).concat((o.refs ?? []).map((r) => r.value)).filter((
    v,
  ) => Number.isFinite(v) && v > 0);
  const maxV = Math.max(...values, 1);
  const minV = o.log ? Math.max(Math.min(...values) / 2, 0.1) : 0;
  const lo = o.log ? Math.floor(Math.log10(minV)) : 0;
  const hi = o.log ? Math.ceil(Math.log10(maxV)) : 0;
  const niceMax = (() => {
    if (o.log) return 10 ** hi;
    const p = 10 ** Math.floor(Math.log10(maxV));
    return Math.ceil(maxV / p) * p;
  })();
  const x = (v: number) => {
    if (!Number.isFinite(v) || v <= 0) return 0;
    if (o.log) return ((Math.log10(Math.max(v, 10 ** lo)) - lo) / (hi - lo)) * plotW;
    return (v / niceMax) * plotW;
  };
  let y = top;
  const parts: string[] = [];
  for (const g of o.groups) {
    parts.push(`<text x="8" y="${y + 11}" font-weight="bold">${esc(g.label)}</text>`);
    y += barH + gap;
    for (const b of g.bars) {
      const w = Math.max(1, x(b.value));
      parts.push(`<text x="${labelW - 6}" y="${y + 12}" text-anchor="end">${esc(b.label)}</text>`);
      parts.push(
        `<rect x="${labelW}" y="${y}" width="${w.toFixed(1)}" height="${barH}" fill="${b.color ?? "#4878a8"}"><title>${
          esc(`${b.label}: ${fmt(b.value)} ${o.unit}`)
        }</title></rect>`,
      );
      parts.push(`<text x="${labelW + w + 4}" y="${y + 12}">${fmt(b.value)}${b.note ? ` ${esc(b.note)}` : ""}</text>`);
      y += barH + gap;
    }
    y += groupGap;
  }
  const bottom = y;
  // Axis ticks.
  const ticks: number[] = [];
  if (o.log) { for (let e = lo; e <= hi; e++) ticks.push(10 ** e); }
  else for (let i = 0; i <= 5; i++) ticks.push((niceMax / 5) * i);
  const axis = ticks.map((t) => {
    const tx = labelW + x(t);
    return `<line x1="${tx}" y1="${top - 6}" x2="${tx}" y2="${bottom}" stroke="#ddd"/><text x="${tx}" y="${
      bottom + 14
    }" text-anchor="middle" fill="#555">${fmt(t)}</text>`;
  });
  const refs = (o.refs ?? []).map((r, i) => {
    const tx = labelW + x(r.value);
    return `<line x1="${tx}" y1="${top - 6}" x2="${tx}" y2="${bottom}" stroke="${
      r.color ?? "#c33"
    }" stroke-dasharray="4 3"/><text x="${tx + 3}" y="${top - 10 - (i % 2) * 11}" fill="${
      r.color ?? "#c33"
    }" font-size="10">${esc(r.label)}</text>`;
  });
  const height = bottom + 34;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">
<rect width="100%" height="100%" fill="#fff"/>
<text x="8" y="16" font-size="14" font-weight="bold">${esc(o.title)}</text>
${axis.join("\n")}
${parts.join("\n")}
${refs.join("\n")}
<text x="${labelW + plotW / 2}" y="${bottom + 28}" text-anchor="middle" fill="#555">${esc(o.unit)}${
    o.log ? " (log scale)" : ""
  }</text>
</svg>
`;
}
