import { type Html, html } from './html.js';

/** A horizontal bar chart as plain SVG: one bar per label, values scaled to the largest. */
export function barChart(
  title: string,
  bars: readonly { label: string; value: number; text: string }[],
  color: string,
): Html {
  const width = 360;
  const rowHeight = 22;
  const labelWidth = 150;
  const max = Math.max(1, ...bars.map((b) => b.value));
  const height = Math.max(1, bars.length) * rowHeight + 24;
  return html`<figure class="chart"><svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" role="img" aria-label="${title}">
<text x="0" y="14" class="chart-title">${title}</text>
${
  bars.length === 0
    ? html`<text x="0" y="36" class="muted">no finished attempts in the last hour</text>`
    : bars.map((b, i) => {
        const y = 24 + i * rowHeight;
        const w = Math.round(((width - labelWidth - 60) * b.value) / max);
        return html`<text x="0" y="${y + 14}">${b.label}</text><rect x="${labelWidth}" y="${y + 3}" width="${Math.max(w, b.value > 0 ? 2 : 0)}" height="14" fill="${color}"/><text x="${labelWidth + w + 6}" y="${y + 14}">${b.text}</text>`;
      })
}
</svg></figure>`;
}
