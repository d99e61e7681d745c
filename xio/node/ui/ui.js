// The mesh map page (xio.node.ui). Plain JS, no framework, no build step.
//
// Every 2 s it fetches /_xio/map and /_xio/apps and redraws. Everything shown comes from
// peers' records, so it is written with textContent and setAttribute only, never as markup:
// a hostile peer's name stays text. With --admin-token the node answers 401; the page then
// asks for the token, keeps it in sessionStorage (this tab only) and sends it as a Bearer
// header to /_xio/ only, never to an app.
'use strict';

const POLL_MS = 2000;
const TOKEN_KEY = 'xio-admin-token';
const SVG = 'http://www.w3.org/2000/svg';
const WIDTH = 800, HEIGHT = 560, MARGIN = 60;

const positions = new Map();  // node id -> {x, y}: kept between polls, so the map is stable
const abouts = new Map();  // app name -> its ABOUT answer (or an error), fetched once

function $(id) { return document.getElementById(id); }

function el(name, attrs, text) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

function html(name, cls, text) {
  const node = document.createElement(name);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

function adminHeaders(path, headers) {
  const result = new Headers(headers || {});
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token && path.startsWith('/_xio/')) result.set('Authorization', 'Bearer ' + token);
  return result;
}

async function getJSON(path) {
  const response = await fetch(path, {headers: adminHeaders(path, {Accept: 'application/json'}),
                                      cache: 'no-store'});
  if (response.status === 401 || response.status === 403) {
    const error = new Error(response.status === 401
      ? 'this node wants its admin token' : 'this node answers its admin pages on loopback only');
    error.status = response.status;
    throw error;
  }
  if (!response.ok) throw new Error(path + ': ' + response.status);
  return response.json();
}

function setStatus(text, isError) {
  const status = $('status');
  status.textContent = text;
  status.classList.toggle('error', Boolean(isError));
}

// -- the map ----------------------------------------------------------------------------

function layout(nodes, links) {
  // A small force layout from the previous positions: springs on links, nodes repel, a pull
  // to the centre. New nodes start on a circle, so the first frame is already readable.
  const count = nodes.length;
  nodes.forEach((node, index) => {
    if (!positions.has(node.id)) {
      const angle = (2 * Math.PI * index) / Math.max(count, 1) - Math.PI / 2;
      const radius = count > 1 ? Math.min(WIDTH, HEIGHT) / 3 : 0;
      positions.set(node.id, {x: WIDTH / 2 + radius * Math.cos(angle),
                              y: HEIGHT / 2 + radius * Math.sin(angle)});
    }
  });
  const ids = new Set(nodes.map((node) => node.id));
  for (const id of [...positions.keys()]) if (!ids.has(id)) positions.delete(id);
  const ideal = Math.min(220, Math.max(90, Math.sqrt((WIDTH * HEIGHT) / Math.max(count, 1)) * 0.8));
  // O(n²) a round: a mesh of hundreds gets fewer rounds, one of thousands its circle only.
  const rounds = count > 400 ? 0 : count > 100 ? 20 : 120;
  for (let round = 0; round < rounds; round++) {
    const force = new Map(nodes.map((node) => [node.id, {x: 0, y: 0}]));
    for (let i = 0; i < count; i++) {
      for (let j = i + 1; j < count; j++) {
        const a = positions.get(nodes[i].id), b = positions.get(nodes[j].id);
        let dx = a.x - b.x, dy = a.y - b.y;
        if (dx === 0 && dy === 0) { dx = (i - j) * 0.5; dy = 0.5; }
        const dist2 = Math.max(dx * dx + dy * dy, 1), push = (ideal * ideal) / dist2;
        force.get(nodes[i].id).x += dx * push * 0.05; force.get(nodes[i].id).y += dy * push * 0.05;
        force.get(nodes[j].id).x -= dx * push * 0.05; force.get(nodes[j].id).y -= dy * push * 0.05;
      }
    }
    for (const link of links) {
      const a = positions.get(link.a), b = positions.get(link.b);
      if (!a || !b) continue;
      const dx = b.x - a.x, dy = b.y - a.y, dist = Math.max(Math.hypot(dx, dy), 1);
      const pull = ((dist - ideal) / dist) * 0.1;
      force.get(link.a).x += dx * pull; force.get(link.a).y += dy * pull;
      force.get(link.b).x -= dx * pull; force.get(link.b).y -= dy * pull;
    }
    for (const node of nodes) {
      const p = positions.get(node.id), f = force.get(node.id);
      f.x += (WIDTH / 2 - p.x) * 0.01; f.y += (HEIGHT / 2 - p.y) * 0.01;
      const step = Math.hypot(f.x, f.y), limit = 20;
      const scale = step > limit ? limit / step : 1;
      p.x = Math.min(WIDTH - MARGIN, Math.max(MARGIN, p.x + f.x * scale));
      p.y = Math.min(HEIGHT - MARGIN, Math.max(MARGIN, p.y + f.y * scale));
    }
  }
}

function linkLabel(link) {
  if (link.rtt_ms === null || link.rtt_ms === undefined) return 'cost ' + link.cost;
  const ms = link.rtt_ms < 10 ? link.rtt_ms.toFixed(2) : link.rtt_ms.toFixed(0);
  return ms + ' ms' + (link.rtt_source === 'record' ? '*' : '');
}

function drawMap(map) {
  const nodes = map.nodes, byId = new Map(nodes.map((node) => [node.id, node]));
  const links = map.links.filter((link) => byId.has(link.a) && byId.has(link.b));
  layout(nodes, links);
  const linkLayer = $('links'), nodeLayer = $('nodes');
  linkLayer.replaceChildren();
  nodeLayer.replaceChildren();
  for (const link of links) {
    const a = positions.get(link.a), b = positions.get(link.b);
    const line = el('line', {x1: a.x, y1: a.y, x2: b.x, y2: b.y,
                             class: 'link' + (link.both_ends ? '' : ' one-way'),
                             'data-link': link.a + '|' + link.b});
    const title = el('title', {}, (byId.get(link.a).name || link.a) + ' – ' +
                     (byId.get(link.b).name || link.b) + ': cost ' + link.cost +
                     (link.rtt_ms == null ? '' : ', RTT ' + link.rtt_ms + ' ms (' +
                      (link.rtt_source === 'record' ? 'as of the last record' : 'live') + ')'));
    line.appendChild(title);
    linkLayer.appendChild(line);
    linkLayer.appendChild(el('text', {x: (a.x + b.x) / 2, y: (a.y + b.y) / 2 - 6,
                                      class: 'link-label', 'data-link-label': link.a + '|' + link.b},
                             linkLabel(link)));
  }
  for (const node of nodes) {
    const p = positions.get(node.id);
    const group = el('g', {class: 'node' + (node.is_self ? ' self' : '') +
                                  (node.reachable ? '' : ' unreachable'),
                           'data-node': node.id, transform: `translate(${p.x},${p.y})`});
    group.appendChild(el('title', {}, node.name + ' (' + node.id + ')\nxio ' + node.version +
                         '\n' + node.urls.join('\n') + '\nrecord seq ' + node.seq + ', ' +
                         node.age_s.toFixed(1) + ' s old'));
    group.appendChild(el('circle', {r: node.is_self ? 16 : 13}));
    group.appendChild(el('text', {y: -24, class: 'node-name', 'data-node-name': node.id},
                         node.name || node.id.slice(0, 8)));
    if (node.apps.length) {
      group.appendChild(el('text', {y: 32, class: 'node-apps'}, node.apps.join(', ')));
    }
    nodeLayer.appendChild(group);
    if (node.is_self) $('self-name').textContent = node.name;
  }
}

// -- the app directory ------------------------------------------------------------------

async function about(app) {
  if (abouts.has(app)) return;
  abouts.set(app, null);  // asked once: a later poll does not ask again
  try {
    const response = await fetch('/' + encodeURIComponent(app) + '/', {method: 'ABOUT'});
    abouts.set(app, response.ok ? await response.json() : {error: 'ABOUT: ' + response.status});
  } catch (error) {
    abouts.set(app, {error: 'ABOUT failed: ' + error.message});
  }
  drawApps(lastApps);
}

let lastApps = {};

function drawApps(apps) {
  lastApps = apps;
  const list = $('apps');
  const names = Object.keys(apps).sort();
  if (!names.length) {
    list.replaceChildren(html('li', 'empty', 'no app in the mesh yet'));
    return;
  }
  list.replaceChildren(...names.map((name) => {
    const item = html('li');
    item.setAttribute('data-app', name);
    const button = html('button', 'app-name', name);
    button.type = 'button';
    button.title = 'put GET /' + name + '/ in the request form';
    button.addEventListener('click', () => {
      $('req-method').value = 'GET';
      $('req-path').value = '/' + name + '/';
    });
    item.appendChild(button);
    const hosts = apps[name].map((host) => (host.name || host.node.slice(0, 8)) +
                                 ' (cost ' + host.cost + ')' + (host.excluded ? ' excluded' : ''));
    item.appendChild(html('span', 'hosts', 'on ' + hosts.join(', ')));
    const described = abouts.get(name);
    if (described) {
      const text = described.error ? described.error :
        (described.doc || 'no description') + (described.children && described.children.length
          ? ' · below: ' + described.children.join(', ') : '') +
        (described.methods ? ' · ' + described.methods.join(' ') : '');
      item.appendChild(html('span', 'about', text));
    } else {
      about(name);
    }
    return item;
  }));
}

// -- the request form -------------------------------------------------------------------

async function sendRequest(event) {
  event.preventDefault();
  const method = $('req-method').value.trim().toUpperCase() || 'GET';
  let path = $('req-path').value.trim() || '/';
  if (!path.startsWith('/')) path = '/' + path;
  const body = $('req-body').value;
  const headers = adminHeaders(path, {Accept: 'application/json, */*;q=0.5'});
  const options = {method, headers, cache: 'no-store'};
  if (body && method !== 'GET' && method !== 'HEAD') {
    options.body = body;
    try { JSON.parse(body); headers.set('Content-Type', 'application/json'); } catch (_) {
      headers.set('Content-Type', 'text/plain; charset=utf-8');
    }
  }
  const status = $('result-status');
  $('result').hidden = false;
  const started = performance.now();
  try {
    const response = await fetch(path, options);
    const text = await response.text();
    status.textContent = response.status + ' ' + response.statusText;
    status.className = response.ok ? 'ok' : 'fail';
    status.setAttribute('data-status', String(response.status));
    $('result-headers').textContent = [...response.headers].map(([k, v]) => k + ': ' + v)
      .join('\n');
    let shown = text;
    try { shown = JSON.stringify(JSON.parse(text), null, 2); } catch (_) { /* not JSON */ }
    $('result-body').textContent = shown;
  } catch (error) {
    status.textContent = 'failed: ' + error.message;
    status.className = 'fail';
    status.setAttribute('data-status', '0');
    $('result-headers').textContent = '';
    $('result-body').textContent = '';
  }
  $('result-time').textContent = (performance.now() - started).toFixed(0) + ' ms';
}

// -- polling ----------------------------------------------------------------------------

async function poll() {
  try {
    const [map, apps] = await Promise.all([getJSON('/_xio/map'), getJSON('/_xio/apps')]);
    drawMap(map);
    drawApps(apps);
    $('token-form').hidden = !sessionStorage.getItem(TOKEN_KEY);
    setStatus(map.nodes.length + ' nodes, ' + map.links.length + ' links · updated ' +
              new Date().toLocaleTimeString());
  } catch (error) {
    if (error.status === 401) $('token-form').hidden = false;
    setStatus(error.message, true);
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

function start() {
  $('token').value = sessionStorage.getItem(TOKEN_KEY) || '';
  $('token-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const token = $('token').value.trim();
    if (token) sessionStorage.setItem(TOKEN_KEY, token); else sessionStorage.removeItem(TOKEN_KEY);
    setStatus('token set: loading…');
  });
  $('request-form').addEventListener('submit', sendRequest);
  poll();
}

document.addEventListener('DOMContentLoaded', start);
