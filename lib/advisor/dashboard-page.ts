/**
 * The limit advisor's dashboard: one self-contained HTML page (no build step, no CDN, so it works
 * offline) that fetches `<its own path>/report.json` (an `AdvisorReport`, see advisor-report.ts)
 * and draws it: per policy, the usage distribution, the denials over time, the candidate limits,
 * the suggestion and the heaviest identities.
 *
 * Its one `<script>` and one `<style>` carry the nonce, and it needs nothing else, so it runs under
 * `dashboardContentSecurityPolicy(nonce)`: no inline handlers, no `style=` attributes (styles are
 * set through classes, or from the script through CSSOM, which CSP allows).
 * The script is plain JS in a string (the tsconfig has no DOM types). It puts report data into the
 * DOM as text only (textContent, setAttribute), never as HTML: identities come from clients.
 */

export interface DashboardPageOptions {
  /** The page's title and heading (default: 'Rate limits'). */
  readonly title?: string;
  /** The CSP nonce of this response: fresh for every request, e.g. `randomBytes(16).toString('base64')`. */
  readonly nonce: string;
}

/** The Content-Security-Policy to send with the page: it allows the page's own script and style, and same-origin fetches. */
export function dashboardContentSecurityPolicy(nonce: string): string {
  checkNonce(nonce);
  return `default-src 'none'; script-src 'nonce-${nonce}'; style-src 'nonce-${nonce}'; connect-src 'self'; img-src 'self' data:`;
}

/** The page, a complete HTML document. */
export function dashboardPage(options: DashboardPageOptions): string {
  const { nonce } = options;
  checkNonce(nonce);
  const title = escapeHtml(options.title ?? 'Rate limits');
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<meta name="robots" content="noindex">
<title>${title}</title>
<link rel="icon" href="data:,">
<style nonce="${nonce}">${STYLE}</style>
</head>
<body>
<header class="page-head">
  <div>
    <h1>${title}</h1>
    <p id="meta" class="muted">Loading the report…</p>
  </div>
  <form id="options" method="get" class="options">
    <label>Target <input name="target" inputmode="decimal" placeholder="0.001" size="7" autocomplete="off"></label>
    <label>Candidates <input name="candidates" placeholder="50,100,200" size="14" autocomplete="off"></label>
    <button type="submit">Apply</button>
  </form>
</header>
<nav id="nav" class="nav" hidden></nav>
<main id="report"></main>
<script nonce="${nonce}">${SCRIPT}</script>
</body>
</html>
`;
}

/** The nonce goes into attributes and the CSP header: base64 (or base64url) only, so it cannot break out of either. */
function checkNonce(nonce: string): void {
  if (typeof nonce !== 'string' || !/^[A-Za-z0-9+/_-]+={0,2}$/.test(nonce)) {
    throw new Error('dashboardPage: the nonce must be a non-empty base64 string, e.g. randomBytes(16).toString("base64")');
  }
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

const STYLE = `
:root {
  color-scheme: light dark;
  --bg: #f6f7f9; --card: #fff; --text: #1d2330; --muted: #626b7a; --line: #dde1e7; --grid: #eceff3;
  --bar: #4a78c2; --over: #d0453f; --limit: #1d2330; --suggested: #17864a;
  --requests: #9fb3d1; --denied: #d0453f; --shadow: #e3a21a; --accent-bg: #eef3fb;
}
@media (prefers-color-scheme: dark) {
  :root {
    --bg: #15181e; --card: #1e222a; --text: #e4e7ec; --muted: #9aa3b2; --line: #343a45; --grid: #2a2f38;
    --bar: #6b97e0; --over: #ef6a62; --limit: #e4e7ec; --suggested: #3fbf78;
    --requests: #52647f; --denied: #ef6a62; --shadow: #f0b63d; --accent-bg: #25303f;
  }
}
* { box-sizing: border-box; }
body { margin: 0; padding: 24px clamp(12px, 3vw, 40px) 48px; background: var(--bg); color: var(--text);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
h1 { font-size: 22px; margin: 0 0 2px; }
h2 { font-size: 18px; margin: 0; word-break: break-word; }
h3 { font-size: 13px; margin: 0 0 6px; text-transform: uppercase; letter-spacing: .04em; color: var(--muted); }
.muted { color: var(--muted); margin: 0; }
.page-head { display: flex; flex-wrap: wrap; gap: 12px 24px; justify-content: space-between; align-items: flex-end; margin: 0 0 16px; }
.options { display: flex; flex-wrap: wrap; gap: 8px; align-items: center; color: var(--muted); }
.options input { font: inherit; padding: 3px 6px; border: 1px solid var(--line); border-radius: 4px; background: var(--card); color: var(--text); }
.options button { font: inherit; padding: 3px 12px; border: 1px solid var(--line); border-radius: 4px; background: var(--card); color: var(--text); cursor: pointer; }
.nav { display: flex; flex-wrap: wrap; gap: 6px; margin: 0 0 16px; }
.nav[hidden] { display: none; }
.nav a { padding: 2px 10px; border-radius: 999px; background: var(--card); border: 1px solid var(--line); color: var(--text); text-decoration: none; font-size: 13px; }
.nav a:hover { border-color: var(--bar); }
#error, #empty { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 20px 24px; margin: 0; }
#error { border-color: var(--over); color: var(--over); font-weight: 600; }
#empty { color: var(--muted); font-size: 16px; }
.policy { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 18px 20px 20px; margin: 0 0 20px; }
.policy-head { display: flex; flex-wrap: wrap; gap: 10px 28px; align-items: flex-start; justify-content: space-between; margin: 0 0 10px; }
.tags { list-style: none; display: flex; flex-wrap: wrap; gap: 6px; padding: 0; margin: 6px 0 0; }
.tag { font-size: 12px; padding: 1px 8px; border-radius: 999px; border: 1px solid var(--line); color: var(--muted); }
.tag.rate { color: var(--text); font-weight: 600; }
.tag.mode-shadow { border-color: var(--shadow); color: var(--shadow); }
.tag.mode-enforce { border-color: var(--bar); color: var(--bar); }
.stats { display: flex; flex-wrap: wrap; gap: 4px 24px; margin: 0; }
.stats div { min-width: 90px; }
.stats dt { font-size: 12px; color: var(--muted); }
.stats dd { margin: 0; font-size: 17px; font-weight: 600; font-variant-numeric: tabular-nums; }
.stats dd small { font-size: 12px; font-weight: 400; color: var(--muted); margin-left: 4px; }
.suggestion { margin: 0 0 14px; padding: 8px 12px; border-left: 3px solid var(--suggested); background: var(--accent-bg); border-radius: 0 4px 4px 0; }
.suggestion strong { font-weight: 600; }
.suggestion .detail { display: block; color: var(--muted); font-size: 13px; }
.suggestion.none { border-left-color: var(--line); color: var(--muted); }
.charts { display: grid; grid-template-columns: minmax(0, 1.8fr) minmax(0, 1fr); gap: 16px; margin: 0 0 14px; }
.tables { display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); gap: 16px; }
@media (max-width: 900px) { .charts, .tables { grid-template-columns: minmax(0, 1fr); } }
figure { margin: 0; }
figcaption { font-size: 13px; color: var(--muted); margin: 0 0 4px; }
svg { display: block; width: 100%; height: auto; overflow: visible; }
svg text { fill: var(--muted); font-size: 11px; font-family: inherit; }
svg .grid { stroke: var(--grid); stroke-width: 1; }
svg .axis { stroke: var(--line); stroke-width: 1; }
svg .bar { fill: var(--bar); stroke: var(--card); stroke-width: .5; }
svg .bar.over { fill: var(--over); }
svg .limit-line { stroke: var(--limit); stroke-width: 2; }
svg .suggested-line { stroke: var(--suggested); stroke-width: 2; stroke-dasharray: 6 4; }
svg text.limit-label { fill: var(--limit); font-weight: 600; }
svg text.suggested-label { fill: var(--suggested); font-weight: 600; }
svg text.row-label { fill: var(--text); }
svg .requests { fill: var(--requests); }
svg .denied { fill: var(--denied); }
svg .shadow-denied { fill: var(--shadow); }
.legend { display: flex; flex-wrap: wrap; gap: 4px 14px; font-size: 12px; color: var(--muted); margin: 4px 0 0; padding: 0; list-style: none; }
.legend li::before { content: ""; display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 5px; vertical-align: -1px; background: var(--swatch); }
.legend .bar { --swatch: var(--bar); } .legend .over { --swatch: var(--over); }
.legend .limit { --swatch: var(--limit); } .legend .suggested { --swatch: var(--suggested); }
.legend .requests { --swatch: var(--requests); } .legend .denied { --swatch: var(--denied); } .legend .shadow-denied { --swatch: var(--shadow); }
table { width: 100%; border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { text-align: right; padding: 4px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-size: 12px; font-weight: 600; color: var(--muted); }
th:first-child, td:first-child { text-align: left; }
tr.current td { font-weight: 600; }
tr.suggested td:first-child { box-shadow: inset 3px 0 var(--suggested); }
td .note { font-size: 11px; font-weight: 400; color: var(--muted); margin-left: 6px; }
td .range { display: block; font-size: 11px; color: var(--muted); }
td.estimate { color: var(--muted); }
table.top td:first-child { max-width: 0; width: 60%; }
table.top code { font: 12px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; word-break: break-all; white-space: pre-wrap; }
`;

// String.raw: the backslashes of the regular expressions stay as written. No `${` and no backtick in it.
const SCRIPT = String.raw`
(function () {
  'use strict';
  var SVG_NS = 'http://www.w3.org/2000/svg';
  var main = document.getElementById('report');
  var numbers = new Intl.NumberFormat();
  var percent = new Intl.NumberFormat(undefined, { style: 'percent', maximumSignificantDigits: 2 });

  function count(n) { return numbers.format(n); }
  function share(x) { return percent.format(x); }
  function compact(n) { return n >= 1e6 ? n / 1e6 + 'M' : n >= 1e3 ? n / 1e3 + 'k' : String(n); }

  /** An HTML element, its text (always as text: report data is never HTML) and its class. */
  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function svg(tag, attributes, parent) {
    var node = document.createElementNS(SVG_NS, tag);
    for (var name in attributes) node.setAttribute(name, String(attributes[name]));
    if (parent) parent.appendChild(node);
    return node;
  }
  function svgText(parent, x, y, text, attributes) {
    var node = svg('text', Object.assign({ x: x, y: y }, attributes || {}), parent);
    node.textContent = text;
    return node;
  }
  /** A hover tooltip on an SVG shape. */
  function tooltip(node, text) { svg('title', {}, node).textContent = text; }
  function round(x) { return Math.round(x * 10) / 10; }

  /** The window as the rate names it: "minute" in "100/minute". */
  function windowUnit(policy) {
    var match = /^\s*[\d.]+\s*\/\s*(.+?)\s*$/.exec(String(policy.rate));
    return match ? match[1] : policy.windowSeconds + ' s';
  }
  function duration(seconds) {
    if (seconds % 86400 === 0) return seconds / 86400 + ' d';
    if (seconds % 3600 === 0) return seconds / 3600 + ' h';
    if (seconds % 60 === 0) return seconds / 60 + ' min';
    return seconds + ' s';
  }
  function time(iso, withDate) {
    var date = new Date(iso);
    return withDate
      ? date.toLocaleString([], { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' })
      : date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  }

  var ESTIMATES = {
    'exact': 'The figures are what this algorithm would do.',
    'lower-bound': 'The algorithm would refuse at least this much.',
    'upper-bound': 'The algorithm would refuse at most this much.',
    'approximate': 'The figures are close to, not exactly, what this algorithm would do.'
  };

  function showError(message) {
    main.replaceChildren(el('p', '', message));
    main.firstChild.id = 'error';
    main.firstChild.setAttribute('role', 'alert');
    document.getElementById('meta').textContent = 'No report.';
    document.body.dataset.state = 'error';
  }

  function render(report) {
    if (!report || !Array.isArray(report.policies)) throw new Error('The answer is not an advisor report.');
    var scope = report.scope === 'shared' ? 'all instances (shared)' : 'this instance only';
    document.getElementById('meta').textContent =
      'Generated ' + new Date(report.generatedAt).toLocaleString() + ' · last ' + duration(report.periodSeconds) + ' · ' + scope;
    if (report.policies.length === 0) {
      var empty = el('p', '', 'No traffic observed yet');
      empty.id = 'empty';
      empty.appendChild(el('span', 'muted', ' — the advisor fills in as requests arrive.'));
      main.replaceChildren(empty);
      document.body.dataset.state = 'empty';
      return;
    }
    var nav = document.getElementById('nav');
    var sections = report.policies.map(function (policy, index) {
      var link = el('a', '', policy.name);
      link.href = '#policy-' + index;
      nav.appendChild(link);
      return policySection(policy, index);
    });
    nav.hidden = report.policies.length < 2;
    main.replaceChildren.apply(main, sections);
    document.body.dataset.state = 'report';
  }

  function policySection(policy, index) {
    var section = el('section', 'policy');
    section.id = 'policy-' + index;
    section.dataset.policy = policy.name;

    var head = el('header', 'policy-head');
    var title = el('div');
    title.appendChild(el('h2', '', policy.name));
    var tags = el('ul', 'tags');
    tags.appendChild(el('li', 'tag rate', policy.rate));
    tags.appendChild(el('li', 'tag', policy.algorithm));
    tags.appendChild(el('li', 'tag mode-' + policy.mode, policy.mode));
    var estimate = el('li', 'tag estimate', 'estimate: ' + policy.estimate);
    estimate.title = ESTIMATES[policy.estimate] || '';
    tags.appendChild(estimate);
    title.appendChild(tags);
    head.appendChild(title);

    var stats = el('dl', 'stats');
    function stat(field, label, value, of) {
      var item = el('div');
      item.appendChild(el('dt', '', label));
      var dd = el('dd');
      dd.dataset.field = field;
      dd.appendChild(el('span', 'num', count(value)));
      if (of) dd.appendChild(el('small', '', share(value / of)));
      item.appendChild(dd);
      stats.appendChild(item);
    }
    stat('clients', 'Clients (client-windows)', policy.clients);
    stat('requests', 'Requests', policy.requests);
    stat('denied', 'Denied', policy.denied, policy.requests);
    stat('shadowDenied', 'Shadow-denied', policy.shadowDenied, policy.requests);
    head.appendChild(stats);
    section.appendChild(head);

    section.appendChild(suggestion(policy));

    var charts = el('div', 'charts');
    charts.appendChild(figure('Usage: share of client-windows that reached each request count (log scales)', distributionChart(policy),
      [['bar', 'within the limit'], ['over', 'past the limit'], ['limit', 'current limit'], ['suggested', 'suggested']]));
    charts.appendChild(figure('Requests and denials over time', timelineChart(policy),
      [['requests', 'requests'], ['denied', 'denied'], ['shadow-denied', 'shadow-denied']]));
    section.appendChild(charts);

    var tables = el('div', 'tables');
    tables.appendChild(block('Candidate limits', candidatesTable(policy)));
    tables.appendChild(block('Heaviest identities', topTable(policy)));
    section.appendChild(tables);
    return section;
  }

  function figure(caption, chart, legend) {
    var node = el('figure', 'chart');
    node.appendChild(el('figcaption', '', caption));
    node.appendChild(chart);
    var list = el('ul', 'legend');
    legend.forEach(function (entry) { list.appendChild(el('li', entry[0], entry[1])); });
    node.appendChild(list);
    return node;
  }
  function block(heading, content) {
    var node = el('div');
    node.appendChild(el('h3', '', heading));
    node.appendChild(content);
    return node;
  }

  function suggestion(policy) {
    var s = policy.suggestion;
    if (!s) return el('p', 'suggestion none', 'No suggestion yet: this policy saw no traffic over the period.');
    var node = el('p', 'suggestion');
    var unit = windowUnit(policy);
    node.appendChild(el('strong', '', 'Suggested: ' + count(s.limit) + '/' + unit));
    node.appendChild(document.createTextNode(' — refuses at most ' + share(s.target) + ' of clients (based on ' + count(s.clients) + ' client-windows)'));
    var change = s.limit === policy.limit ? 'the current limit, ' + policy.rate + ', already is the smallest that meets the target'
      : (s.limit > policy.limit ? 'up' : 'down') + ' from the current ' + policy.rate;
    node.appendChild(el('span', 'detail', 'Over the period it would have refused at most ' + share(s.clientsDenied) + ' of client-windows and ' +
      share(s.requestsDenied) + ' of ' + count(s.requests) + ' requests; ' + change + '.'));
    return node;
  }

  // x: the request count on a log scale; y: the share of client-windows that reached it, on a log scale
  // (the tail past the limit is a fraction of a percent: on a linear scale it would not show).
  function distributionChart(policy) {
    var W = 640, H = 270, left = 54, right = 14, top = 34, bottom = 38;
    var plotW = W - left - right, plotH = H - top - bottom, base = top + plotH;
    var chart = svg('svg', { 'class': 'distribution', viewBox: '0 0 ' + W + ' ' + H, role: 'img',
      'aria-label': 'Usage distribution of ' + policy.name });
    var points = (policy.distribution || []).filter(function (p) { return p.threshold > 0; });
    if (!points.length || !(policy.clients > 0)) {
      svgText(chart, W / 2, H / 2, 'No usage recorded yet', { 'text-anchor': 'middle' });
      return chart;
    }
    var last = points[points.length - 1].threshold;
    var lastEnd = Math.max(last + 1, last * 1.09);
    var xMin = Math.min(1, points[0].threshold);
    var xMax = Math.max(lastEnd, policy.limit * 1.2, (policy.suggested || 0) * 1.2);
    var lx0 = Math.log10(xMin), lx1 = Math.log10(xMax);
    function x(value) { return left + (Math.log10(value) - lx0) / (lx1 - lx0) * plotW; }
    var smallest = 1 / policy.clients;
    points.forEach(function (p) { if (p.clients > 0) smallest = Math.min(smallest, p.clients / policy.clients); });
    var ly0 = Math.min(-2, Math.floor(Math.log10(smallest))), ly1 = 0;
    function y(value) { return top + (ly1 - Math.log10(value)) / (ly1 - ly0) * plotH; }

    // grid and axes
    var decadeStep = ly1 - ly0 > 6 ? 2 : 1;
    for (var d = ly1; d >= ly0; d -= decadeStep) {
      svg('line', { 'class': 'grid', x1: left, x2: left + plotW, y1: round(y(Math.pow(10, d))), y2: round(y(Math.pow(10, d))) }, chart);
      svgText(chart, left - 6, round(y(Math.pow(10, d))) + 4, share(Math.pow(10, d)), { 'text-anchor': 'end' });
    }
    var few = lx1 - lx0 <= 3.2;
    for (var e = Math.floor(lx0); e <= Math.ceil(lx1); e++) {
      [1, 2, 5].forEach(function (m) {
        var v = m * Math.pow(10, e);
        if (v < xMin || v > xMax || (m !== 1 && !few)) return;
        var px = round(x(v));
        svg('line', { 'class': 'grid', x1: px, x2: px, y1: top, y2: base }, chart);
        svgText(chart, px, base + 15, compact(v), { 'text-anchor': 'middle' });
      });
    }
    svg('line', { 'class': 'axis', x1: left, x2: left + plotW, y1: base, y2: base }, chart);
    svgText(chart, left + plotW / 2, H - 4, 'requests by one client in one window', { 'text-anchor': 'middle' });

    // a bar per threshold, from it to the next: its height is the share that reached the threshold
    points.forEach(function (p, k) {
      if (!(p.clients > 0)) return;
      var end = k + 1 < points.length ? points[k + 1].threshold : lastEnd;
      var s = p.clients / policy.clients;
      var x0 = x(p.threshold), yTop = y(s);
      var bar = svg('rect', { 'class': p.threshold > policy.limit ? 'bar over' : 'bar', x: round(x0), y: round(yTop),
        width: Math.max(0.5, round(x(end) - x0)), height: round(base - yTop), 'data-threshold': p.threshold, 'data-clients': p.clients }, chart);
      tooltip(bar, count(p.clients) + ' client-windows (' + share(s) + ') reached ' + count(p.threshold) + ' requests; ' +
        count(p.requests) + ' requests came at or past it');
    });

    marker(chart, 'limit', x(policy.limit), top, base, left + plotW, 'limit ' + count(policy.limit), 0);
    if (policy.suggested !== null && policy.suggested !== undefined) {
      marker(chart, 'suggested', x(policy.suggested), top, base, left + plotW, 'suggested ' + count(policy.suggested), 14);
    }
    return chart;
  }

  /** A vertical line across the plot, labelled above it (to its left when it would overflow on the right). */
  function marker(chart, kind, px, top, base, rightEdge, label, dy) {
    px = round(px);
    svg('line', { 'class': kind + '-line', x1: px, x2: px, y1: top - 6 + dy, y2: base, 'data-x': px }, chart);
    var anchorEnd = px > rightEdge - 90;
    svgText(chart, anchorEnd ? px - 4 : px + 4, top - 22 + dy + 10, label, { 'class': kind + '-label', 'text-anchor': anchorEnd ? 'end' : 'start' });
  }

  // Two rows over the same buckets: requests, then denials (denied and shadow-denied stacked), each on its own scale.
  function timelineChart(policy) {
    var W = 360, H = 270, left = 8, right = 8, top = 22, gap = 34, bottom = 22;
    var buckets = policy.timeline || [];
    var chart = svg('svg', { 'class': 'timeline', viewBox: '0 0 ' + W + ' ' + H, role: 'img', 'aria-label': 'Requests and denials over time of ' + policy.name });
    if (!buckets.length) {
      svgText(chart, W / 2, H / 2, 'No timeline yet', { 'text-anchor': 'middle' });
      return chart;
    }
    var rowH = (H - top - gap - bottom) / 2, plotW = W - left - right;
    var slot = plotW / buckets.length, barW = Math.max(1, slot * 0.78);
    var maxRequests = Math.max.apply(null, buckets.map(function (b) { return b.requests; }));
    var maxDenied = Math.max.apply(null, buckets.map(function (b) { return b.denied + b.shadowDenied; }));
    var base1 = top + rowH, base2 = base1 + gap + rowH;
    svgText(chart, left, top - 8, 'requests · peak ' + count(maxRequests) + ' a bucket', { 'class': 'row-label' });
    svgText(chart, left, base1 + gap - 8, maxDenied > 0 ? 'denials · peak ' + count(maxDenied) + ' a bucket' : 'denials · none', { 'class': 'row-label' });
    var spansDays = new Date(buckets[buckets.length - 1].start) - new Date(buckets[0].start) >= 86400000;
    buckets.forEach(function (b, i) {
      var x0 = round(left + i * slot + (slot - barW) / 2), w = round(barW);
      var hRequests = maxRequests > 0 ? b.requests / maxRequests * rowH : 0;
      var hDenied = maxDenied > 0 ? b.denied / maxDenied * rowH : 0;
      var hShadow = maxDenied > 0 ? b.shadowDenied / maxDenied * rowH : 0;
      var text = time(b.start, spansDays) + ': ' + count(b.requests) + ' requests, ' + count(b.denied) + ' denied, ' + count(b.shadowDenied) + ' shadow-denied';
      tooltip(svg('rect', { 'class': 'requests', x: x0, y: round(base1 - hRequests), width: w, height: round(hRequests), 'data-index': i }, chart), text);
      tooltip(svg('rect', { 'class': 'denied', x: x0, y: round(base2 - hDenied), width: w, height: round(hDenied), 'data-index': i }, chart), text);
      tooltip(svg('rect', { 'class': 'shadow-denied', x: x0, y: round(base2 - hDenied - hShadow), width: w, height: round(hShadow), 'data-index': i }, chart), text);
    });
    svg('line', { 'class': 'axis', x1: left, x2: left + plotW, y1: base1, y2: base1 }, chart);
    svg('line', { 'class': 'axis', x1: left, x2: left + plotW, y1: base2, y2: base2 }, chart);
    var ticks = buckets.length > 2 ? [0, Math.floor((buckets.length - 1) / 2), buckets.length - 1] : buckets.map(function (_, i) { return i; });
    ticks.forEach(function (i, n) {
      var anchor = n === 0 ? 'start' : n === ticks.length - 1 ? 'end' : 'middle';
      var px = anchor === 'start' ? left + i * slot : anchor === 'end' ? left + (i + 1) * slot : left + (i + 0.5) * slot;
      svgText(chart, round(px), H - 6, time(buckets[i].start, spansDays), { 'text-anchor': anchor });
    });
    return chart;
  }

  function table(className, headings) {
    var node = el('table', className);
    var row = el('tr');
    headings.forEach(function (heading) { var th = el('th', '', heading); th.scope = 'col'; row.appendChild(th); });
    node.appendChild(el('thead')).appendChild(row);
    node.appendChild(el('tbody'));
    return node;
  }
  function cell(row, className, text) { return row.appendChild(el('td', className, text)); }

  function candidatesTable(policy) {
    var node = table('candidates', ['Limit', 'Clients denied', 'Requests denied', 'Estimate']);
    var body = node.tBodies[0];
    (policy.candidates || []).forEach(function (c) {
      var row = el('tr');
      row.dataset.limit = c.limit;
      if (c.limit === policy.limit) row.classList.add('current');
      if (c.limit === policy.suggested) row.classList.add('suggested');
      var limit = cell(row, 'limit');
      limit.appendChild(el('span', 'num', count(c.limit)));
      if (c.limit === policy.limit) limit.appendChild(el('span', 'note', 'current'));
      if (c.limit === policy.suggested) limit.appendChild(el('span', 'note', 'suggested'));
      [[c.clientsDenied, c.clientsDeniedRange, 'clients'], [c.requestsDenied, c.requestsDeniedRange, 'requests']].forEach(function (entry) {
        var td = cell(row, entry[2]);
        td.appendChild(el('span', 'value', share(entry[0])));
        if (!c.exact && entry[1] && entry[1].low !== entry[1].high) td.appendChild(el('span', 'range', share(entry[1].low) + ' – ' + share(entry[1].high)));
      });
      var kind = cell(row, 'estimate', c.exact ? 'exact' : '≈');
      kind.title = c.exact ? 'limit + 1 is one of the histogram thresholds: both shares are exact'
        : 'between the thresholds around it: the share shown is the middle of the range under it';
      body.appendChild(row);
    });
    return node;
  }

  function topTable(policy) {
    var node = table('top', ['Identity', 'Requests', '± error']);
    var body = node.tBodies[0];
    var top = policy.top || [];
    if (!top.length) {
      var row = el('tr');
      cell(row, 'muted', 'none yet').colSpan = 3;
      body.appendChild(row);
    }
    top.forEach(function (entry) {
      var row = el('tr');
      cell(row, 'identity').appendChild(el('code', '', entry.identity));
      cell(row, 'requests', count(entry.requests));
      cell(row, 'error', entry.error > 0 ? '± ' + count(entry.error) : 'exact');
      body.appendChild(row);
    });
    return node;
  }

  // Target and candidates go into the query string, which the report request forwards; other parameters (a token) stay.
  function setUpOptions() {
    var form = document.getElementById('options');
    var params = new URLSearchParams(location.search);
    form.elements.target.value = params.get('target') || '';
    form.elements.candidates.value = params.get('candidates') || '';
    form.addEventListener('submit', function (event) {
      event.preventDefault();
      var next = new URLSearchParams(location.search);
      ['target', 'candidates'].forEach(function (name) {
        var value = form.elements[name].value.trim();
        if (value) next.set(name, value); else next.delete(name);
      });
      var query = next.toString();
      location.href = location.pathname + (query ? '?' + query : '');
    });
  }

  async function load() {
    var url = location.pathname.replace(/\/+$/, '') + '/report.json' + location.search;
    try {
      var response = await fetch(url, { credentials: 'same-origin', headers: { accept: 'application/json' } });
      if (!response.ok) {
        var detail = '';
        try {
          var body = await response.json();
          detail = body && (body.detail || body.message) ? ': ' + (body.detail || body.message) : '';
        } catch (ignored) { /* not JSON: the status says enough */ }
        showError('Could not load the report: HTTP ' + response.status + (response.statusText ? ' ' + response.statusText : '') + detail);
        return;
      }
      render(await response.json());
    } catch (error) {
      showError('Could not show the report: ' + (error && error.message ? error.message : String(error)));
    } finally {
      document.body.dataset.ready = 'true';
    }
  }

  setUpOptions();
  load();
})();
`;
