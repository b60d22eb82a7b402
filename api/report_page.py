"""A published report as a printable HTML page (GET /v1/reports/{id}.html): the city's score, every district
and grid with its components, the most improved and worsened, and the best and worst ranked intersections.
Self-contained (no script, no external asset) with a print stylesheet, so it prints as it is published."""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape
from typing import Any, Final

# Intersections are many: the page shows the best and the worst ranked, the CSV has them all.
INTERSECTIONS_SHOWN: Final = 20

_STYLE: Final = """
body { font-family: "Noto Sans", "Noto Sans CJK SC", sans-serif; margin: 2rem; color: #111; }
h1 { font-size: 1.5rem; margin-bottom: 0.2rem; } h2 { margin-top: 2rem; } h3 { margin-top: 1.2rem; }
.meta { color: #444; font-size: 0.9rem; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; font-size: 0.85rem; }
th, td { border: 1px solid #bbb; padding: 0.2rem 0.5rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
td.unscored { color: #888; } .up { color: #176f2c; } .down { color: #a11; }
@media print {
  @page { size: A4 landscape; margin: 12mm; }
  body { margin: 0; font-size: 9pt; }
  section.index { page-break-before: always; } section.index:first-of-type { page-break-before: auto; }
  table { page-break-inside: auto; } tr { page-break-inside: avoid; } thead { display: table-header-group; }
  a { color: inherit; text-decoration: none; }
}
"""


def _number(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    return f"{value:,.{digits}f}" if isinstance(value, float) else f"{value:,}"


def _rate(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}%"


def _change(value: float | None) -> str:
    if value is None:
        return "<td>–</td>"
    css = "up" if value > 0 else "down" if value < 0 else ""
    return f'<td class="{css}">{value:+.2f}</td>'


def _places_table(places: list[dict[str, Any]], components: list[dict[str, Any]], ranked: bool) -> str:
    head = "".join(f"<th>{escape(c['name'])}<br>rate · score</th>" for c in components)
    rank_head = "<th>rank</th><th>change</th>" if ranked else ""
    rows = []
    for place in places:
        cells = []
        for component in place["components"]:
            css = "" if component["scored"] else ' class="unscored"'
            cells.append(f"<td{css}>{_rate(component['rate'])} · {_number(component['score'])}<br>"
                         f"<small>{_number(component['numerator'], 0)} / "
                         f"{_number(component['denominator'], 0)}</small></td>")
        rank_cells = ""
        if ranked:
            rank = place.get("rank")
            rank_cells = (f"<td>{rank if rank is not None else escape(place.get('unranked_reason') or '–')}"
                          f"</td>{_change(place.get('score_change'))}")
        rows.append(f"<tr><td>{escape(place['place'])}</td><td>{_number(place['score'])}</td>"
                    f"<td>{escape(place['grade'] or '–')}</td><td>{_rate(place['coverage'])}</td>"
                    f"{rank_cells}{''.join(cells)}</tr>")
    return (f"<table><thead><tr><th>place</th><th>score</th><th>grade</th><th>coverage</th>{rank_head}{head}"
            f"</tr></thead><tbody>{''.join(rows)}</tbody></table>")


def _movers(ranking: dict[str, Any]) -> str:
    def names(places: list[dict[str, Any]]) -> str:
        return ", ".join(f"{escape(p['place'])} ({p['score_change']:+.2f})" for p in places) or "none"
    return (f"<p>Most improved: {names(ranking['most_improved'])}. "
            f"Most worsened: {names(ranking['most_worsened'])}.</p>")


def _late_data(late: dict[str, Any] | None) -> str:
    if late is None:
        return "<p>Late data for the previous period: its report was not published.</p>"
    if not late["any"]:
        return ("<p>No data arrived for the previous period after its report "
                f"({escape(late['report_id'])}).</p>")
    rows = "".join(
        f"<tr><td>{escape(name)}</td><td>{_number(entry['published'], 0)}</td>"
        f"<td>{_number(entry['now'], 0)}</td>"
        f"<td>{_number(entry['late'], 0)}</td><td>{_rate(entry['late_share'])}</td></tr>"
        for name, entry in late["figures"].items() if entry["late"] != 0)
    changed = ", ".join(f"{count} {level}s" for level, count in late["places_changed"].items())
    return (f"<p>Data that arrived for the previous period after its report ({escape(late['report_id'])}) "
            f"was published; places changed: {escape(changed)}.</p><table><thead><tr><th>figure</th>"
            f"<th>published</th><th>now</th><th>late</th><th>late share</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>")


def render_report(report: dict[str, Any]) -> str:
    period = report["period"]
    published = datetime.fromtimestamp(report["published_ms"] / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")
    title = f"Civility indices, {period['kind']} {period['key']}"
    sections = []
    for name, index in report["indices"].items():
        components = index["components"]
        weights = ", ".join(f"{escape(c['name'])} {c['weight']:g}" for c in components)
        bands = ", ".join(f"{escape(b['grade'])} ≥ {b['min_score']:g}" for b in index["bands"])
        city = index["levels"].get("city", [])
        parts = [f'<section class="index"><h2>{escape(index["title"])} ({escape(name)})</h2>',
                 f'<p class="meta">Weights: {weights}. Grades: {bands}.</p>',
                 "<h3>City</h3>", _places_table(city, components, ranked=False)]
        for level in ("district", "grid"):
            places = sorted(index["levels"].get(level, []),
                            key=lambda p: (p.get("rank") is None, p.get("rank") or 0, p["place"]))
            if places:
                parts += [f"<h3>{level.capitalize()}s</h3>", _movers(index["rankings"][level]),
                          _places_table(places, components, ranked=True)]
        ranking = index["rankings"].get("intersection")
        if ranking and ranking["ranked"]:
            by_place = {p["place"]: p for p in index["levels"]["intersection"]}
            ranked = ranking["ranked"]
            shown = ranked if len(ranked) <= 2 * INTERSECTIONS_SHOWN else (
                ranked[:INTERSECTIONS_SHOWN] + ranked[-INTERSECTIONS_SHOWN:])
            cut = f" (the best and the worst {INTERSECTIONS_SHOWN})" if shown != ranked else ""
            parts += [f"<h3>Intersections: {len(ranked)} ranked, {len(ranking['unranked'])} unranked{cut}"
                      "</h3>", _movers(ranking),
                      _places_table([by_place[p["place"]] for p in shown], components, ranked=True)]
        parts.append("</section>")
        sections.append("".join(parts))
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f"<style>{_STYLE}</style></head><body><header><h1>{escape(title)}</h1>"
        f'<p class="meta">{escape(period["first_day"])} to {escape(period["last_day"])} '
        f"({escape(report['time_zone'])}); report {escape(report['report_id'])}, published {published}; "
        f"method {escape(report['method_version'])}. Scores are 0–100; a component shows its rate, its score "
        f"and its numerator / denominator; a grey component had too little volume to be scored.</p>"
        f"{_late_data(report['late_data_for_previous'])}</header>{''.join(sections)}</body></html>")
