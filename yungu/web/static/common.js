// Shared by the console and the big screen: DOM helper, API client, i18n, formatting.
// Written for Yungu (Apache-2.0); no third-party code.

export const TZ = "Asia/Shanghai";

// ------------------------------------------------------------------ DOM
export function h(tag, attrs, ...kids) {
  const svg = tag.startsWith("svg:");
  const el = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.setAttribute("class", v);
    else if (k === "text") el.textContent = v;
    else if (k in el && !svg && k !== "list") el[k] = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const kid of kids.flat(Infinity)) {
    if (kid === null || kid === undefined || kid === false) continue;
    el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return el;
}

export function clear(el) { while (el.firstChild) el.removeChild(el.firstChild); return el; }

// ------------------------------------------------------------------ API
let csrf = ""; // kept in memory only: never in browser storage
export function setCsrf(token) { csrf = token || ""; }

export class ApiError extends Error {
  constructor(status, body) {
    super((body && (body.detail || body.title)) || `HTTP ${status}`);
    this.status = status; this.body = body || {};
  }
}

export async function api(method, path, body) {
  const headers = { "Accept": "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && csrf) headers["X-CSRF-Token"] = csrf;
  const r = await fetch("/api/v1" + path, {
    method, headers, credentials: "same-origin", cache: "no-store",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (r.status === 204) return null;
  const type = r.headers.get("content-type") || "";
  const data = type.includes("json") ? await r.json() : await r.text();
  if (!r.ok) throw new ApiError(r.status, typeof data === "object" ? data : { detail: data });
  return data;
}
export const get = (p) => api("GET", p);

export function uuid() {
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40; b[8] = (b[8] & 0x3f) | 0x80;
  const x = [...b].map((v) => v.toString(16).padStart(2, "0")).join("");
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
}

// ------------------------------------------------------------------ i18n
const LANG_KEY = "yungu.lang"; // a display preference, not a credential
export let lang = (() => { try { return localStorage.getItem(LANG_KEY) || "zh"; } catch { return "zh"; } })();
export function setLang(l) {
  lang = l;
  try { localStorage.setItem(LANG_KEY, l); } catch { /* private mode */ }
  document.documentElement.lang = l === "zh" ? "zh-CN" : "en";
}
document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";

let dict = { zh: {}, en: {} };
export function addStrings(d) {
  for (const [k, [zh, en]] of Object.entries(d)) { dict.zh[k] = zh; dict.en[k] = en; }
}
export function t(key) { return (dict[lang] && dict[lang][key]) || dict.en[key] || key; }
export const nameOf = (o) => (lang === "zh" ? o.name_zh || o.name : o.name || o.name_zh) || o.id;

addStrings({
  measured: ["实测", "measured"], modelled: ["模型", "modelled"], declared: ["申报", "declared"], none: ["无数据", "no data"],
  general: ["通用", "general"], intelligent: ["智算", "intelligent"], supercomputing: ["超算", "supercomputing"],
  pending: ["待准入", "pending"], queued: ["排队", "queued"], scheduled: ["已调度", "scheduled"],
  dispatched: ["已下发", "dispatched"], running: ["运行中", "running"], succeeded: ["成功", "succeeded"],
  failed: ["失败", "failed"], cancelled: ["已取消", "cancelled"], preempted: ["被抢占", "preempted"],
});

// ------------------------------------------------------------------ formatting
const fmtCache = new Map();
function dtf(opts) {
  const key = lang + JSON.stringify(opts);
  if (!fmtCache.has(key)) fmtCache.set(key, new Intl.DateTimeFormat(lang === "zh" ? "zh-CN" : "en-GB", { timeZone: TZ, hourCycle: "h23", ...opts }));
  return fmtCache.get(key);
}
export function fmtTime(iso, withDate = true) {
  if (!iso) return "—";
  const d = new Date(iso);
  if (isNaN(d)) return "—";
  return dtf(withDate ? { year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit" }
    : { hour: "2-digit", minute: "2-digit", second: "2-digit" }).format(d);
}
export function fmtHour(iso) { return dtf({ hour: "2-digit", minute: "2-digit" }).format(new Date(iso)); }
export function fmtNum(x, digits = 1) {
  if (x === null || x === undefined || isNaN(x)) return "—";
  return Number(x).toLocaleString(lang === "zh" ? "zh-CN" : "en-GB", { minimumFractionDigits: digits, maximumFractionDigits: digits });
}
export function fmtPct(x, digits = 0) { return x === null || x === undefined ? "—" : fmtNum(100 * x, digits) + "%"; }
export function fmtDur(s) {
  if (s === null || s === undefined) return "—";
  s = Math.round(s);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}
export function methodTag(m) { return h("span", { class: "tag m-" + (m || "none"), title: m || "" }, t(m || "none")); }
