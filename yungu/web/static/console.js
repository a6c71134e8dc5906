// The Yungu web console: sign-in, overview, one-click run, jobs, capacity, money, market, operator.
import {
  h, clear, api, get, setCsrf, ApiError, uuid, t, addStrings, lang, setLang, nameOf,
  fmtTime, fmtNum, fmtPct, fmtDur, methodTag,
} from "./common.js";
import { lineChart, bar } from "./chart.js";

addStrings({
  brand: ["云谷 · 算力网络控制台", "Yungu compute network console"],
  signin: ["登录", "Sign in"], signout: ["退出", "Sign out"], apikey: ["API 密钥", "API key"],
  signin_hint: ["用 API 密钥登录；密钥只用于换取会话，不保存在浏览器中。", "Sign in with your API key; it is exchanged for a session and never stored in the browser."],
  nav_overview: ["概览", "Overview"], nav_run: ["一键运行", "One-click run"], nav_jobs: ["作业", "Jobs"],
  nav_capacity: ["算力资源", "Capacity"], nav_money: ["费用", "Money"], nav_market: ["交易市场", "Market"],
  nav_operator: ["运营管理", "Operator"], nav_screen: ["大屏", "Big screen"],
  running_jobs: ["运行中作业", "Running jobs"], queued_jobs: ["排队作业", "Queued jobs"],
  spend_month: ["本月费用", "Spend this month"], kwh_month: ["本月电量", "Energy this month"],
  green_share: ["绿电占比", "Green share"], recent_jobs: ["最近作业", "Recent jobs"],
  name: ["名称", "Name"], state: ["状态", "State"], pool: ["资源池", "Pool"], region: ["区域", "Region"],
  submitted: ["提交时间", "Submitted"], started: ["开始", "Started"], finished: ["结束", "Finished"],
  template: ["模板", "Template"], command: ["命令", "Command"], cpus: ["CPU 核数", "CPUs"],
  accelerators: ["加速卡", "Accelerators"], est_duration: ["预计时长（秒）", "Estimated duration (s)"],
  what_matters: ["优先考虑", "What matters"], obj_time: ["最快", "Fastest"], obj_cost: ["最便宜", "Cheapest"],
  obj_green: ["最绿色", "Greenest"], obj_balanced: ["均衡", "Balanced"], allowed_regions: ["允许的区域", "Allowed regions"],
  get_quote: ["获取调度报价", "Get the scheduler's quote"], confirm_run: ["确认运行", "Confirm and run"],
  quote_title: ["调度方案（未提交）", "Scheduler's options (not submitted)"], start: ["开始时间", "Start"],
  wait: ["等待", "Wait"], cost: ["预计费用", "Est. cost"], carbon: ["碳排放", "Carbon"], why: ["说明", "Why"],
  chosen: ["推荐", "chosen"], platform: ["平台", "Platform"], no_options: ["没有可用方案", "No feasible option"],
  job: ["作业", "Job"], live_log: ["实时日志", "Live log"], transitions: ["状态变迁", "Transitions"],
  explanation: ["调度解释", "Scheduling explanation"], energy: ["能耗", "Energy"],
  certificate: ["绿电证书", "Green-power certificate"], issue_cert: ["签发证书", "Issue certificate"],
  download: ["下载", "Download"], verify: ["校验", "Verify"], view_html: ["查看", "View"],
  valid: ["签名有效", "Signature valid"], invalid: ["签名无效", "Signature invalid"],
  no_telemetry: ["暂无遥测数据（作业运行期间需有节点代理上报）", "No telemetry for this job yet (a node agent must report while it runs)"],
  cancel: ["取消", "Cancel"], exit_code: ["退出码", "Exit code"], event: ["事件", "Event"], time: ["时间", "Time"],
  reason: ["原因", "Reason"], classes: ["算力类别", "Compute classes"], declared_p: ["申报算力 (P)", "Declared (P)"],
  in_use_p: ["在用算力 (P)", "In use (P)"], regions: ["区域", "Regions"], sites: ["数据中心", "Sites"],
  pools: ["资源池", "Pools"], load: ["负载", "Load"], executor_health: ["执行器健康", "Executor health"],
  reachable: ["可达", "reachable"], unreachable: ["不可达", "unreachable"], peers: ["对等平台", "Peer platforms"],
  no_peers: ["尚未接入对等平台", "No peer platforms connected yet"], balance: ["余额", "Balance"],
  available: ["可用", "Available"], usage: ["用量", "Usage"], invoices: ["发票", "Invoices"], print: ["打印", "Print"],
  topup: ["充值", "Top up"], topup_reason_hint: ["例如：合同 2026-118 预付款（将记入审计日志）", "e.g. prepayment, contract 2026-118 (audited)"], tenant: ["租户", "Tenant"], amount: ["金额 (元)", "Amount (CNY)"],
  posted_prices: ["挂牌价格", "Posted prices"], orders: ["订单", "Orders"], auctions: ["竞价结果", "Auction results"],
  price_index: ["算力价格指数", "Price index"], tenants: ["租户", "Tenants"], keys: ["API 密钥", "API keys"],
  alerts: ["告警", "Alerts"], policies: ["调度策略", "Policies in force"], admin_only: ["仅管理员可见", "Admins only"],
  nothing: ["暂无", "Nothing yet"], price_per_h: ["元/卡·时", "CNY/device-h"], period: ["账期", "Period"],
  number: ["发票号", "Number"], side: ["方向", "Side"], quantity: ["数量", "Quantity"], price: ["价格", "Price"],
  volume: ["成交量", "Volume"], product: ["产品", "Product"], role: ["角色", "Role"], created: ["创建", "Created"],
  revoked: ["已吊销", "revoked"], severity: ["级别", "Severity"], message: ["内容", "Message"],
  loading: ["加载中…", "Loading…"], done: ["完成", "Done"], back: ["返回", "Back"],
  tpl_hello: ["你好，和林格尔", "Hello Horinger"], tpl_primes: ["计算质数", "Count primes"],
  tpl_batch: ["绿色批处理", "Green batch"], tpl_custom: ["自定义命令", "Custom command"],
  all_jobs: ["全部作业", "All jobs"], operator_view: ["运营视角：全部租户", "Operator view: every tenant"],
  decision: ["决策", "Decision"], score: ["得分", "Score"], measured_by: ["计量方式", "Method"],
  it_kwh: ["IT 电量 kWh", "IT kWh"], facility_kwh: ["设施电量 kWh", "Facility kWh"],
  loc_carbon: ["位置法碳排 (g)", "Location-based carbon (g)"], mkt_carbon: ["市场法碳排 (g)", "Market-based carbon (g)"],
  devices: ["卡", "devices"], utilisation: ["利用率", "Utilisation"], pflops_prec: ["各精度 PFLOPS", "PFLOPS per precision"],
  summary: ["摘要", "Summary"], submit_failed: ["提交失败", "Submit failed"], quote_failed: ["报价失败", "Quote failed"],
});

const TEMPLATES = {
  hello: { name: "hello-horinger", command: "echo '你好，和林格尔! Hello from Horinger'; uname -s; sleep 3; echo done" },
  primes: { name: "count-primes", command: "python3 -c \"print(sum(1 for n in range(2, 20000) if all(n % d for d in range(2, int(n**0.5)+1))))\"" },
  batch: { name: "green-batch", command: "for i in 1 2 3 4 5; do echo step $i; sleep 1; done" },
  custom: { name: "my-job", command: "" },
};

const app = document.getElementById("app");
let me = null; // {role, tenant_id, tenant_name, csrf_token, platform_name}
let cleanup = []; // EventSources etc. of the current page
let regionsCache = null;

const isStaff = () => me && (me.role === "admin" || me.role === "operator");

async function regions() {
  if (!regionsCache) regionsCache = (await get("/regions")).items;
  return regionsCache;
}
const regionName = (id) => { const r = (regionsCache || []).find((x) => x.id === id); return r ? nameOf(r) : id || "—"; };

function badge(state) { return h("span", { class: "badge s-" + state }, t(state)); }
function table(cols, rows, empty) {
  if (!rows.length) return h("p", { class: "muted" }, empty || t("nothing"));
  return h("table", {}, h("thead", {}, h("tr", {}, cols.map((c) => h("th", {}, c[0])))),
    h("tbody", {}, rows.map((r) => h("tr", {}, cols.map((c) => h("td", {}, c[1](r)))))));
}
function card(title, value, sub, method) {
  return h("div", { class: "card" }, h("div", { class: "card-title" }, title, method ? methodTag(method) : null),
    h("div", { class: "card-value" }, value), sub ? h("div", { class: "card-sub" }, sub) : null);
}
function section(title, ...body) { return h("section", {}, h("h2", {}, title), ...body); }
function errorBox(e) { return h("div", { class: "error", role: "alert" }, e instanceof ApiError ? `${e.status}: ${e.message}` : String(e)); }

// ------------------------------------------------------------------ shell
function nav() {
  const items = [["overview", "nav_overview"], ["run", "nav_run"], ["jobs", "nav_jobs"], ["capacity", "nav_capacity"],
    ["money", "nav_money"], ["market", "nav_market"]];
  if (isStaff()) items.push(["operator", "nav_operator"]);
  const cur = (location.hash.slice(2).split("/")[0]) || "overview";
  return h("header", { class: "top" },
    h("div", { class: "brand" }, h("img", { src: "/static/favicon.svg", alt: "", width: 28, height: 28 }), t("brand")),
    h("nav", {}, items.map(([id, key]) => h("a", { href: "#/" + id, class: cur === id ? "active" : "", "data-nav": id }, t(key))),
      isStaff() ? h("a", { href: "/screen", target: "_blank", rel: "noopener" }, t("nav_screen")) : null),
    h("div", { class: "who" },
      h("button", { class: "link", id: "lang", onclick: () => { setLang(lang === "zh" ? "en" : "zh"); render(); } }, lang === "zh" ? "English" : "中文"),
      h("span", { class: "user" }, `${me.tenant_name || me.role} · ${me.role}`),
      h("button", { class: "link", id: "signout", onclick: signOut }, t("signout"))));
}

async function signOut() {
  try { await api("DELETE", "/session"); } catch { /* already gone */ }
  me = null; setCsrf(""); location.hash = ""; render();
}

function signInView(err) {
  const input = h("input", { type: "password", id: "apikey", name: "apikey", autocomplete: "off", placeholder: "yg_…", required: true, spellcheck: false });
  const form = h("form", { class: "signin", id: "signin-form", onsubmit: async (ev) => {
    ev.preventDefault();
    const key = input.value.trim(); input.value = "";
    try {
      me = await api("POST", "/session", { api_key: key }); setCsrf(me.csrf_token);
      if (!location.hash) location.hash = "#/overview";
      render();
    } catch (e) { clear(app).append(signInView(e)); }
  } },
  h("h1", {}, "云谷 Yungu"), h("p", { class: "muted" }, t("signin_hint")),
  h("label", { for: "apikey" }, t("apikey")), input,
  h("button", { type: "submit", id: "signin" }, t("signin")),
  err ? errorBox(err) : null,
  h("button", { type: "button", class: "link", onclick: () => { setLang(lang === "zh" ? "en" : "zh"); clear(app).append(signInView()); } }, lang === "zh" ? "English" : "中文"));
  return h("main", { class: "center" }, form);
}

async function render() {
  for (const f of cleanup) f();
  cleanup = [];
  if (!me) {
    try { me = await get("/session"); } catch { me = null; }
    if (me && !me.signed_in) me = null;
    if (me) setCsrf(me.csrf_token);
  }
  if (!me) { clear(app).append(signInView()); return; }
  await regions().catch(() => []);
  if (!poolsCache) poolsCache = await get("/pools").then((x) => x.items).catch(() => null);
  const main = h("main", { id: "page" }, h("p", { class: "muted" }, t("loading")));
  clear(app).append(nav(), main);
  const [page, ...args] = (location.hash.slice(2) || "overview").split("/");
  const fn = PAGES[page] || PAGES.overview;
  try {
    const body = await fn(...args.map(decodeURIComponent));
    clear(main).append(...[body].flat().filter((x) => x !== null && x !== undefined));
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) { me = null; render(); return; }
    clear(main).append(errorBox(e));
  }
}
window.addEventListener("hashchange", render);

// ------------------------------------------------------------------ pages
const PAGES = {};

PAGES.overview = async () => {
  const [sum, jobs] = await Promise.all([get("/usage/summary"), get("/jobs?limit=20")]);
  const cards = h("div", { class: "cards" },
    card(t("running_jobs"), sum.jobs.running, null, "measured"),
    card(t("queued_jobs"), sum.jobs.queued, null, "measured"),
    card(t("spend_month"), "¥ " + sum.spend.amount, sum.wallet ? `${t("balance")} ¥ ${sum.wallet.balance}` : null, sum.spend.method),
    card(t("kwh_month"), fmtNum(Number(sum.energy.facility_kwh), 3) + " kWh", null, sum.energy.method),
    card(t("green_share"), fmtPct(sum.green.share, 1), sum.green.basis, sum.green.method));
  return [isStaff() ? h("p", { class: "note" }, t("operator_view")) : null, cards,
    section(t("recent_jobs"), jobsTable(jobs.items))];
};

function jobsTable(items) {
  return table([
    [t("name"), (j) => h("a", { href: "#/jobs/" + j.id, class: "job-link" }, j.name)],
    [t("state"), (j) => badge(j.state)],
    [t("pool"), (j) => j.pool_id || "—"],
    [t("region"), (j) => (j.pool_id ? regionName(poolRegion(j.pool_id)) : "—")],
    [t("submitted"), (j) => fmtTime(j.submitted_at)],
    [t("finished"), (j) => fmtTime(j.finished_at)],
  ], items);
}
let poolsCache = null;
const poolRegion = (pid) => { const p = (poolsCache || []).find((x) => x.id === pid); return p ? p.region_id : pid.split("-")[0]; };

PAGES.jobs = async (id) => {
  if (id) return jobPage(id);
  const jobs = await get("/jobs?limit=100");
  return section(isStaff() ? t("all_jobs") : t("nav_jobs"), jobsTable(jobs.items));
};

PAGES.run = async () => {
  const regs = await regions();
  const tplSel = h("select", { id: "tpl" }, Object.keys(TEMPLATES).map((k) => h("option", { value: k }, t("tpl_" + k))));
  const name = h("input", { id: "job-name", value: TEMPLATES.hello.name, maxlength: 200 });
  const cmd = h("textarea", { id: "job-command", rows: 3 }, TEMPLATES.hello.command);
  tplSel.addEventListener("change", () => { const x = TEMPLATES[tplSel.value]; name.value = x.name; cmd.value = x.command; });
  const cpus = h("input", { id: "job-cpus", type: "number", min: 1, max: 64, value: 1 });
  const accs = h("input", { id: "job-accs", type: "number", min: 0, max: 8, value: 0 });
  const dur = h("input", { id: "job-dur", type: "number", min: 1, value: 60 });
  const objs = ["balanced", "time", "cost", "green"];
  const objBox = h("div", { class: "radios" }, objs.map((o) => h("label", {},
    h("input", { type: "radio", name: "objective", value: o, checked: o === "balanced" }), t("obj_" + o))));
  const regBox = h("div", { class: "checks", id: "regions" }, regs.map((r) => h("label", {},
    h("input", { type: "checkbox", name: "region", value: r.id, checked: true }), nameOf(r))));
  const out = h("div", { id: "quote" });
  let chosen = null;
  const tenantSel = isStaff() ? h("select", { id: "job-tenant" }, (await get("/admin/tenants")).items.map((x) =>
    h("option", { value: x.id }, x.name))) : null;
  const spec = () => ({
    name: name.value.trim(), command: cmd.value,
    resources: { cpus: Number(cpus.value) || 1, memory_gb: 1, accelerators: Number(accs.value) || 0 },
    estimated_duration_s: Number(dur.value) || undefined,
    objective: objBox.querySelector("input:checked").value,
    labels: { origin: "beijing", via: "console" },
    ...(tenantSel ? { tenant_id: tenantSel.value } : {}),
  });
  const quoteBtn = h("button", { id: "get-quote", type: "button", onclick: async () => {
    clear(out).append(h("p", { class: "muted" }, t("loading")));
    const allowed = [...regBox.querySelectorAll("input:checked")].map((x) => x.value);
    try {
      const q = await api("POST", "/quote", { ...spec(), regions: allowed.length === regs.length ? [] : allowed });
      q.alternatives.forEach((a) => { a.home = q.platform_id; });
      chosen = q.alternatives.find((a) => a.chosen) || q.alternatives[0] || null;
      clear(out).append(quoteView(q, (a) => { chosen = a; }), confirmBtn);
      confirmBtn.disabled = !chosen;
    } catch (e) { clear(out).append(h("h3", {}, t("quote_failed")), errorBox(e)); }
  } }, t("get_quote"));
  const confirmBtn = h("button", { id: "confirm-run", type: "button", class: "primary", onclick: async () => {
    if (!chosen) return;
    const base = spec();
    const remote = chosen.platform_id && chosen.platform_id !== chosen.home;  // a peer platform's offer
    // A peer's pool is not ours to name: pin the job to that platform; the scheduler delegates it.
    const body = remote ? { ...base, labels: { ...base.labels, "federation.pin": "platform:" + chosen.platform_id } }
      : { ...base, pool: chosen.pool_id };
    if (chosen.wait_s > 0) body.earliest_start = chosen.start;
    confirmBtn.disabled = true;
    try {
      const job = await api("POST", "/jobs", body);
      location.hash = "#/jobs/" + job.id;
    } catch (e) { out.append(h("h3", {}, t("submit_failed")), errorBox(e)); confirmBtn.disabled = false; }
  } }, t("confirm_run"));
  const field = (label, el) => h("div", { class: "field" }, h("label", { for: el.id }, label), el);
  return section(t("nav_run"), h("form", { class: "run", onsubmit: (e) => e.preventDefault() },
    tenantSel ? field(t("tenant"), tenantSel) : null, field(t("template"), tplSel), field(t("name"), name), field(t("command"), cmd),
    h("div", { class: "row" }, field(t("cpus"), cpus), field(t("accelerators"), accs), field(t("est_duration"), dur)),
    h("fieldset", {}, h("legend", {}, t("what_matters")), objBox),
    h("fieldset", {}, h("legend", {}, t("allowed_regions")), regBox),
    quoteBtn), out);
};

function quoteView(q, pick) {
  if (!q.alternatives.length) return h("div", {}, h("h3", {}, t("quote_title")), h("p", { class: "error" }, t("no_options") + ": " + q.summary));
  const rows = q.alternatives.map((a, i) => h("tr", { class: a.chosen ? "chosen" : "" },
    h("td", {}, h("input", { type: "radio", name: "option", value: String(i), checked: a.chosen, "data-pool": a.pool_id,
      onchange: () => pick(a) })),
    h("td", {}, a.pool_id, a.chosen ? h("span", { class: "tag m-chosen" }, t("chosen")) : null),
    h("td", {}, regionName(a.region_id)), h("td", {}, a.platform_id || q.platform_id),
    h("td", {}, fmtTime(a.start)), h("td", {}, fmtDur(a.wait_s)), h("td", {}, "¥ " + a.cost_cny),
    h("td", {}, fmtNum(a.carbon_kg, 3) + " kg"), h("td", {}, fmtPct(a.green_share)),
    h("td", { class: "why" }, (a.why_lost || []).join("; "))));
  return h("div", { class: "quote" }, h("h3", {}, t("quote_title"), " ", methodTag("modelled")),
    h("p", { class: "muted" }, q.summary),
    h("table", { id: "quote-table" }, h("thead", {}, h("tr", {}, ["", t("pool"), t("region"), t("platform"), t("start"), t("wait"),
      t("cost"), t("carbon"), t("green_share"), t("why")].map((x) => h("th", {}, x)))), h("tbody", {}, rows)));
}

async function jobPage(id) {
  const job = await get("/jobs/" + encodeURIComponent(id));
  const [events, expl] = await Promise.all([get(`/jobs/${id}/events`), get(`/jobs/${id}/explain`).catch(() => null)]);
  const stateEl = h("span", { id: "job-state" }, badge(job.state));
  const exitEl = h("span", { id: "job-exit" }, job.exit_code ?? "—");
  const log = h("pre", { id: "log", class: "log" });
  const evBody = h("div", {}, eventsTable(events.items));
  const energyBox = h("div", { id: "energy" });
  const certBox = h("div", { id: "cert" });
  const es = new EventSource(`/api/v1/jobs/${encodeURIComponent(id)}/logs/stream`);
  cleanup.push(() => es.close());
  es.addEventListener("log", (m) => { log.append(JSON.parse(m.data).data); log.scrollTop = log.scrollHeight; });
  es.addEventListener("state", async (m) => {
    const d = JSON.parse(m.data);
    clear(stateEl).append(badge(d.state)); exitEl.textContent = d.exit_code ?? "—";
    try { clear(evBody).append(eventsTable((await get(`/jobs/${id}/events`)).items)); } catch { /* page left */ }
  });
  es.addEventListener("end", (m) => {
    const d = JSON.parse(m.data); es.close();
    const btn = document.getElementById("cancel");
    if (btn) btn.remove();
    clear(stateEl).append(badge(d.state)); exitEl.textContent = d.exit_code ?? "—";
    log.dataset.done = "1";
    loadEnergy(id, energyBox); // polls until the node agent's samples for the job have arrived
  });
  es.onerror = () => { if (es.readyState === EventSource.CLOSED) es.close(); };
  if (["succeeded", "failed", "cancelled"].includes(job.state)) loadEnergy(id, energyBox);
  else energyBox.append(h("p", { class: "muted" }, t("loading")));
  const cancel = !["succeeded", "failed", "cancelled"].includes(job.state) ? h("button", { id: "cancel", onclick: async () => {
    await api("POST", `/jobs/${id}/cancel`); } }, t("cancel")) : null;
  certBox.append(h("button", { id: "issue-cert", onclick: () => issueCert(id, certBox) }, t("issue_cert")));
  return [
    h("p", {}, h("a", { href: "#/jobs" }, "← " + t("back"))),
    h("h2", { id: "job-title" }, `${t("job")} ${job.name}`),
    h("dl", { class: "facts" },
      h("dt", {}, "ID"), h("dd", { class: "mono" }, job.id), h("dt", {}, t("state")), h("dd", {}, stateEl),
      h("dt", {}, t("pool")), h("dd", {}, job.pool_id || "—"), h("dt", {}, t("region")), h("dd", {}, job.pool_id ? regionName(poolRegion(job.pool_id)) : "—"),
      h("dt", {}, t("submitted")), h("dd", {}, fmtTime(job.submitted_at)), h("dt", {}, t("exit_code")), h("dd", {}, exitEl),
      h("dt", {}, t("command")), h("dd", { class: "mono" }, job.spec.command)),
    cancel,
    section(t("live_log"), log),
    section(t("transitions"), evBody),
    section(t("explanation"), explView(expl)),
    section(t("energy"), energyBox),
    section(t("certificate"), certBox),
  ];
}

function eventsTable(items) {
  return table([[t("time"), (e) => fmtTime(e.at)], [t("event"), (e) => e.event],
    [t("state"), (e) => h("span", {}, e.from ? badge(e.from) : "", " → ", badge(e.to))], [t("reason"), (e) => e.reason || ""]], items);
}

function explView(e) {
  if (!e) return h("p", { class: "muted" }, t("nothing"));
  return h("div", {}, h("p", {}, h("b", {}, t("decision") + ": "), e.decision, " — ", e.summary, " ", methodTag("modelled")),
    table([[t("pool"), (a) => a.pool_id], [t("start"), (a) => fmtTime(a.start)], [t("wait"), (a) => fmtDur(a.wait_s)],
      [t("cost"), (a) => "¥ " + a.cost_cny], [t("carbon"), (a) => fmtNum(a.carbon_kg, 3) + " kg"],
      [t("green_share"), (a) => fmtPct(a.green_share)], [t("score"), (a) => fmtNum(a.score, 3)],
      [t("why"), (a) => (a.chosen ? t("chosen") : (a.why_lost || []).join("; "))]], e.alternatives || []));
}

async function loadEnergy(id, box, tries = 10) {
  let r;
  try { r = await get(`/jobs/${encodeURIComponent(id)}/energy`); } catch (e) { clear(box).append(errorBox(e)); return; }
  if (!r.available) {
    clear(box).append(h("p", { class: "muted" }, t("no_telemetry")));
    if (tries > 0 && document.body.contains(box)) setTimeout(() => loadEnergy(id, box, tries - 1), 2000);
    return;
  }
  clear(box).append(h("div", { class: "cards" },
    card(t("it_kwh"), fmtNum(r.energy.it_kwh, 6), null, r.energy.method),
    card(t("facility_kwh"), fmtNum(r.energy.facility_kwh, 6), null, r.energy.method),
    card(t("loc_carbon"), fmtNum(r.location_based.carbon_g, 2), null, "modelled"),
    card(t("mkt_carbon"), fmtNum(r.market_based.carbon_g, 2), null, "modelled")));
}

async function issueCert(id, box) {
  try {
    const cert = await api("POST", "/certs/jobs/" + encodeURIComponent(id));
    const blob = new Blob([JSON.stringify(cert, null, 2)], { type: "application/json" });
    const url = URL.createObjectURL(blob);
    cleanup.push(() => URL.revokeObjectURL(url));
    const result = h("span", { id: "verify-result" });
    clear(box).append(h("p", {}, h("span", { class: "mono" }, cert.body.id), " · ", cert.signature.alg, " ", cert.signature.key_id),
      h("a", { href: url, download: `yungu-cert-${cert.body.id}.json`, id: "cert-download", class: "button" }, t("download")), " ",
      h("a", { href: `/api/v1/certs/${cert.body.id}/html`, target: "_blank", rel: "noopener", class: "button" }, t("view_html")), " ",
      h("button", { id: "verify-cert", onclick: async () => {
        const v = await api("POST", "/certs/verify", cert);
        clear(result).append(h("span", { class: v.valid ? "ok" : "error" }, v.valid ? t("valid") : `${t("invalid")}: ${v.reason}`));
      } }, t("verify")), " ", result);
  } catch (e) { box.append(errorBox(e)); }
}

PAGES.capacity = async () => {
  const [cap, sites] = await Promise.all([get("/capacity"), get("/sites")]);
  poolsCache = cap.pools;
  const health = isStaff() ? await get("/sites/check").catch((e) => ({ error: e })) : null;
  const classes = h("div", { class: "cards" }, Object.entries(cap.classes).map(([k, v]) =>
    card(`${t(k)} (${v.precision.toUpperCase()})`, fmtNum(v.declared_pflops, 1) + " P", `${t("in_use_p")}: ${fmtNum(v.in_use_pflops, 2)} P`, "declared")));
  const precs = ["fp64", "fp32", "tf32", "fp16", "fp8"];
  const out = [section(t("classes"), classes, h("p", { class: "muted" }, cap.basis)),
    section(t("regions"), table([[t("region"), (r) => regionName(r[0])],
      ...["general", "intelligent", "supercomputing"].map((k) => [`${t(k)} P`, (r) => `${fmtNum(r[1].in_use_pflops[k], 2)} / ${fmtNum(r[1].declared_pflops[k], 1)}`]),
      [t("load"), (r) => bar(r[1].devices_total ? r[1].devices_used / r[1].devices_total : r[1].cpus_used / (r[1].cpus_total || 1))],
      [t("running_jobs"), (r) => r[1].jobs]], Object.entries(cap.regions))),
    section(t("sites"), table([[t("name"), (s) => nameOf(s)], [t("region"), (s) => regionName(s.region_id)], ["PUE", (s) => s.pue],
      [t("price"), (s) => `${s.electricity_price_cny_per_kwh} 元/kWh`], [t("green_share"), (s) => fmtPct(s.green_contract_share)],
      [t("pools"), (s) => s.pools], [t("running_jobs"), (s) => s.jobs_running]], sites.items)),
    section(t("pools"), table([[t("pool"), (p) => p.id], [t("classes"), (p) => t(p.compute_class)], [t("accelerators"), (p) => p.accelerator || "CPU"],
      [t("devices"), (p) => (p.devices_total ? `${p.devices_used}/${p.devices_total}` : `${p.cpus_used}/${p.cpus_total} CPU`)],
      ...precs.map((x) => [x.toUpperCase() + " P", (p) => fmtNum(p.pflops[x], 1)]),
      [t("load"), (p) => bar(p.in_use_share)]], cap.pools))];
  if (health) {
    out.push(section(t("executor_health"), health.error ? errorBox(health.error) : table([[t("sites"), (s) => s.site_id],
      ["executor", (s) => `${s.executor} (${s.executor_kind || "?"})`],
      [t("state"), (s) => h("span", { class: s.reachable ? "ok" : "error" }, s.reachable ? t("reachable") : t("unreachable"))]], health.items)));
    const ov = await get("/overview").catch(() => null);
    out.push(section(t("peers"), ov && ov.peers.length ? table([["id", (p) => p.id || p.platform_id], [t("state"), (p) => p.state || ""]], ov.peers)
      : h("p", { class: "muted" }, t("no_peers"))));
  }
  return out;
};

PAGES.money = async () => {
  const [sum, usage, invoices] = await Promise.all([get("/usage/summary"), get("/billing/usage?limit=200"), get("/billing/invoices")]);
  const out = [h("div", { class: "cards" },
    card(t("balance"), sum.wallet ? "¥ " + sum.wallet.balance : "—", sum.wallet ? `${t("available")} ¥ ${sum.wallet.available}` : null, "measured"),
    card(t("spend_month"), "¥ " + sum.spend.amount, null, "measured"),
    card(t("kwh_month"), fmtNum(Number(sum.energy.facility_kwh), 3) + " kWh", null, "measured")),
  section(t("usage"), table([[t("job"), (u) => h("a", { href: "#/jobs/" + u.job_id }, u.job_id.slice(0, 13) + "…")], [t("pool"), (u) => u.pool_id],
    [t("finished"), (u) => fmtTime(u.ended_at)], ["kWh", (u) => u.facility_kwh], [t("amount"), (u) => "¥ " + u.amount], [t("period"), (u) => u.booked_period]],
  usage.slice(-50).reverse())),
  section(t("invoices"), table([[t("number"), (i) => i.number], [t("period"), (i) => i.period], [t("tenant"), (i) => i.tenant_id],
    [t("amount"), (i) => "¥ " + i.total_gross],
    [t("print"), (i) => h("a", { href: `/api/v1/billing/invoices/${encodeURIComponent(i.number)}/html`, target: "_blank", rel: "noopener" }, t("print"))]], invoices))];
  if (isStaff()) {
    const tenants = (await get("/admin/tenants")).items;
    const sel = h("select", { id: "topup-tenant" }, tenants.map((x) => h("option", { value: x.id }, x.name)));
    const amt = h("input", { id: "topup-amount", value: "100.00", inputmode: "decimal", pattern: "\\d+(\\.\\d{1,2})?" });
    const why = h("input", { id: "topup-reason", required: true, maxlength: "200", placeholder: t("topup_reason_hint") });
    const res = h("span", {});
    out.push(section(t("topup"), h("form", { class: "row", onsubmit: async (ev) => {
      ev.preventDefault();
      try {
        const a = await api("POST", `/ledger/tenants/${sel.value}/topup`, { id: "topup:" + uuid(), amount: amt.value.trim(), reason: why.value.trim() });
        clear(res).append(h("span", { class: "ok" }, `${t("balance")} ¥ ${a.balance}`));
      } catch (e) { clear(res).append(errorBox(e)); }
    } }, h("label", {}, t("tenant"), sel), h("label", {}, t("amount"), amt), h("label", {}, t("reason"), why), h("button", { type: "submit", id: "topup" }, t("topup")), res)));
  }
  return out;
};

PAGES.market = async () => {
  const [prices, orders, auctions, index] = await Promise.all([get("/market/prices"), get("/market/orders"), get("/market/auctions"), get("/market/index")]);
  const colors = ["#37d0ff", "#7cf29c", "#ffb547", "#ff6b8b", "#b18cff", "#f2f27c"];
  const series = Object.entries(index).map(([line, v], i) => ({ name: line, color: colors[i % colors.length],
    points: v.points.map((p) => ({ x: Date.parse(p.at), y: Number(p.price) })) }));
  const legend = h("div", { class: "legend" }, series.map((s) => { const sw = h("i", {}); sw.style.background = s.color; return h("span", {}, sw, s.name); }));
  return [section(t("price_index"), lineChart(series, { width: 900, height: 240, xFmt: (x) => fmtTime(new Date(x).toISOString()).slice(5, 16), yFmt: (v) => "¥" + v.toFixed(1), empty: t("nothing") }), legend),
    section(t("posted_prices"), table([[t("pool"), (p) => p.pool_id], [t("region"), (p) => regionName(p.region)], [t("classes"), (p) => t(p.class)],
      [t("accelerators"), (p) => p.accelerator || "CPU"], [t("price_per_h"), (p) => "¥ " + p.price_cny_per_device_hour]], prices)),
    section(t("orders"), table([[t("product"), (o) => o.product], [t("side"), (o) => o.side], [t("quantity"), (o) => o.quantity],
      [t("price"), (o) => "¥ " + o.price], [t("created"), (o) => fmtTime(o.created_at)]], orders.items)),
    section(t("auctions"), table([[t("product"), (a) => a.product], [t("price"), (a) => (a.price ? "¥ " + a.price : "—")],
      [t("volume"), (a) => a.volume], [t("orders"), (a) => a.orders], [t("time"), (a) => fmtTime(a.cleared_at)]], auctions.items))];
};

PAGES.operator = async () => {
  if (!isStaff()) return h("p", { class: "error" }, "403");
  const keysReq = me.role === "admin" ? get("/admin/keys").catch((e) => e) : Promise.resolve(new Error("admin only"));
  const [tenants, keys, alerts, pol] = await Promise.all([get("/admin/tenants"), keysReq,
    get("/alerts").catch((e) => e), get("/policies")]);
  return [section(t("tenants"), table([["ID", (x) => h("span", { class: "mono" }, x.id)], [t("name"), (x) => x.name], [t("created"), (x) => fmtTime(x.created_at)]], tenants.items)),
    section(t("keys"), keys instanceof Error ? h("p", { class: "muted" }, t("admin_only")) : table([["prefix", (k) => h("span", { class: "mono" }, k.prefix + "…")],
      [t("role"), (k) => k.role], [t("tenant"), (k) => k.tenant_id || "—"], [t("name"), (k) => k.name], [t("state"), (k) => (k.revoked ? t("revoked") : "✓")]], keys.items)),
    section(t("alerts"), alerts instanceof Error ? errorBox(alerts) : table([[t("time"), (a) => fmtTime(a.opened_at || a.at)], [t("severity"), (a) => a.severity || a.kind],
      [t("message"), (a) => a.message || a.detail || JSON.stringify(a)]], alerts.items)),
    section(t("policies"), h("p", {}, `${pol.scheduler} · ${pol.source}`), h("pre", { class: "json" }, JSON.stringify(pol.policy, null, 2)))];
};

render();
