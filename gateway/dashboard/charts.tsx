// The dashboard's charts: inline SVG drawn on the server, so a page needs no script, no chart library and
// no request after it loads, and reads the same on Node and Workers. Each bar is a <g class="bar"> with
// its numbers in data-* attributes and a <title> tooltip, which is also how tests read a chart back.
import type { Child } from "hono/jsx";
import { formatCompact } from "./format.ts";

/** One column: stacked values, bottom first, one per series. */
export interface Column {
  label: string;
  /** The tooltip. */
  title: string;
  values: number[];
  data: Record<string, string | number>;
}

export interface Series {
  name: string;
  /** A CSS class giving the series its fill (see layout.tsx). */
  className: string;
}

const WIDTH = 760;
const HEIGHT = 240;
const LEFT = 56;
const RIGHT = 8;
const TOP = 12;
const BOTTOM = 30;

/** A round number at or above `max` (1, 2, 2.5 or 5 × a power of ten), so axis labels read cleanly. */
export function niceCeiling(max: number): number {
  if (max <= 0) return 1;
  const power = 10 ** Math.floor(Math.log10(max));
  for (const step of [1, 2, 2.5, 5, 10]) {
    if (step * power >= max) return step * power;
  }
  return 10 * power;
}

function dataAttributes(data: Record<string, string | number>): Record<string, string> {
  return Object.fromEntries(Object.entries(data).map(([k, v]) => [`data-${k}`, String(v)]));
}

function Legend({ series }: { series: Series[] }) {
  return (
    <div class="legend">
      {series.map((s) => (
        <span>
          <i class={`swatch ${s.className}`} />
          {s.name}
        </span>
      ))}
    </div>
  );
}

/** Vertical stacked columns over a category axis (days). */
export function ColumnChart(props: {
  id: string;
  label: string;
  columns: Column[];
  series: Series[];
  format?: (value: number) => string;
}) {
  const { columns, series } = props;
  const format = props.format ?? formatCompact;
  const highest = Math.max(0, ...columns.map((c) => c.values.reduce((a, b) => a + b, 0)));
  const top = niceCeiling(highest);
  const plotWidth = WIDTH - LEFT - RIGHT;
  const plotHeight = HEIGHT - TOP - BOTTOM;
  const slot = plotWidth / Math.max(1, columns.length);
  const barWidth = Math.max(1, Math.min(28, slot * 0.72));
  const y = (value: number) => TOP + plotHeight - (value / top) * plotHeight;
  // At most ~10 labels along the axis, evenly spaced, always including the last.
  const every = Math.max(1, Math.ceil(columns.length / 10));
  // Nothing to scale: only the zero line, rather than an axis of made-up steps.
  const ticks = highest === 0 ? [0] : [0, 0.25, 0.5, 0.75, 1].map((f) => f * top);
  return (
    <figure class="chart">
      <svg
        id={props.id}
        viewBox={`0 0 ${WIDTH} ${HEIGHT}`}
        role="img"
        aria-label={props.label}
        preserveAspectRatio="xMidYMid meet"
      >
        <title>{props.label}</title>
        {ticks.map((t) => (
          <g class="tick">
            <line x1={LEFT} x2={WIDTH - RIGHT} y1={y(t)} y2={y(t)} />
            <text x={LEFT - 6} y={y(t) + 4} text-anchor="end">
              {format(t)}
            </text>
          </g>
        ))}
        {columns.map((column, i) => {
          const x = LEFT + i * slot + (slot - barWidth) / 2;
          let base = 0;
          const rects: Child[] = [];
          column.values.forEach((value, s) => {
            if (value > 0) {
              rects.push(
                <rect
                  class={series[s]?.className ?? ""}
                  x={x.toFixed(2)}
                  y={y(base + value).toFixed(2)}
                  width={barWidth.toFixed(2)}
                  height={(y(base) - y(base + value)).toFixed(2)}
                />,
              );
            }
            base += value;
          });
          const labelled = i % every === 0 || i === columns.length - 1;
          return (
            <g class="bar" {...dataAttributes(column.data)}>
              <title>{column.title}</title>
              {/* The full slot catches the pointer, so a tooltip shows even over an empty day. */}
              <rect
                class="hit"
                x={(LEFT + i * slot).toFixed(2)}
                y={TOP}
                width={slot.toFixed(2)}
                height={plotHeight}
              />
              {rects}
              {labelled ? (
                <text class="axis" x={(x + barWidth / 2).toFixed(2)} y={HEIGHT - 10} text-anchor="middle">
                  {column.label}
                </text>
              ) : null}
            </g>
          );
        })}
      </svg>
      {series.length > 1 ? <Legend series={series} /> : null}
    </figure>
  );
}

export interface Row {
  label: string;
  title: string;
  value: number;
  /** Shown at the end of the bar. */
  text: string;
  data: Record<string, string | number>;
}

/** Horizontal bars, one per row, longest first as given (adapters by tokens). */
export function BarChart(props: {
  id: string;
  label: string;
  rows: Row[];
  className: string;
  /** Room kept right of the longest bar for its text. */
  textWidth?: number;
}) {
  const rowHeight = 26;
  const labelWidth = 200;
  const textWidth = props.textWidth ?? 90;
  const height = TOP + props.rows.length * rowHeight + 4;
  const max = Math.max(1, ...props.rows.map((r) => r.value));
  const plot = WIDTH - labelWidth - textWidth;
  return (
    <figure class="chart">
      <svg id={props.id} viewBox={`0 0 ${WIDTH} ${height}`} role="img" aria-label={props.label}>
        <title>{props.label}</title>
        {props.rows.map((row, i) => {
          const y = TOP + i * rowHeight;
          const width = Math.max(row.value > 0 ? 2 : 0, (row.value / max) * plot);
          return (
            <g class="bar" {...dataAttributes(row.data)}>
              <title>{row.title}</title>
              <text class="axis" x={labelWidth - 8} y={y + 15} text-anchor="end">
                {row.label.length > 28 ? `${row.label.slice(0, 27)}…` : row.label}
              </text>
              <rect
                class={props.className}
                x={labelWidth}
                y={y + 3}
                width={width.toFixed(2)}
                height={rowHeight - 8}
              />
              <text class="value" x={labelWidth + width + 6} y={y + 15}>
                {row.text}
              </text>
            </g>
          );
        })}
      </svg>
    </figure>
  );
}
