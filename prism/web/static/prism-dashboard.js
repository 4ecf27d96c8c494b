// Prism's dashboard page: sign in with a bearer token (kept in this tab's sessionStorage, never
// a cookie), pick a range of UTC days, and every panel is drawn from one registered operation,
// sent by its sha256 hash (the hashes are in #dashboard's data-operations; the operations are
// prism/web/dashboard.graphql). Charts by Chart.js; each chart's numbers are also in a table,
// its text alternative. Loaded from Prism itself (see prism/web/assets.py): the page allows
// no inline script and connects to its own origin only.
(function () {
  "use strict";

  var KEY = "prism.dashboard.bearer";
  var ENDPOINT = "/graphql";
  var DEFAULT_DAYS = 30;
  var MAX_DAYS = 366;
  var DAY_MS = 86400000;
  // Colours of at least 3:1 against the white panels (WCAG 1.4.11), told apart by their
  // labels and tables too, never by colour alone.
  var BLUE = "#1d4ed8";
  var AMBER = "#b45309";
  var RED = "#b91c1c";
  var GREEN = "#15803d";
  var VIOLET = "#6d28d9";
  var SLATE = "#475569";
  var RISKS = [
    { level: "HIGH", label: "High", color: RED },
    { level: "MEDIUM", label: "Medium", color: AMBER },
    { level: "LOW", label: "Low", color: GREEN },
    { level: null, label: "Not analysed", color: SLATE },
  ];
  var ACTIONS = [
    { key: "accepted", label: "Accepted", color: GREEN },
    { key: "modified", label: "Modified", color: BLUE },
    { key: "custom", label: "Custom", color: VIOLET },
    { key: "rejected", label: "Rejected", color: RED },
  ];

  var main = document.getElementById("dashboard");
  var operations = JSON.parse(main.getAttribute("data-operations"));
  var form = document.getElementById("sign-in");
  var input = document.getElementById("token");
  var who = document.getElementById("who");
  var signOut = document.getElementById("sign-out");
  var range = document.getElementById("range");
  var fromInput = document.getElementById("from");
  var toInput = document.getElementById("to");
  var problem = document.getElementById("problem");
  var panels = document.getElementById("panels");
  var token = "";
  var loading = 0;

  var integer = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
  var dollars = new Intl.NumberFormat("en-US", {
    style: "currency",
    currency: "USD",
    minimumFractionDigits: 2,
    maximumFractionDigits: 4,
  });

  function count(n) {
    return integer.format(n);
  }
  function usd(decimal) {
    return dollars.format(Number(decimal));
  }
  function percent(value) {
    return value.toFixed(1) + "%";
  }
  function seconds(value) {
    return value.toFixed(2) + " s";
  }
  function rating(value) {
    return value === null ? "none rated" : value.toFixed(2) + " / 5";
  }

  if (window.Chart) {
    Chart.defaults.animation = false;
    Chart.defaults.color = "#1e293b";
    Chart.defaults.borderColor = "#cbd5e1";
    Chart.defaults.font.family = 'system-ui, -apple-system, "Segoe UI", Roboto, sans-serif';
    Chart.defaults.maintainAspectRatio = false;
  }

  // --- the API -------------------------------------------------------------------------

  function ApiError(message, code) {
    this.message = message;
    this.code = code;
  }

  function call(name, variables) {
    return window.fetch(ENDPOINT, {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: "Bearer " + token },
      body: JSON.stringify({
        operationName: name,
        variables: variables || {},
        extensions: { persistedQuery: { version: 1, sha256Hash: operations[name] } },
      }),
    }).then(function (response) {
      return response.json().catch(function () {
        throw new ApiError("Prism answered " + response.status + " without JSON.", null);
      });
    }).then(function (answer) {
      if (answer.errors && answer.errors.length) {
        var error = answer.errors[0];
        throw new ApiError(error.message, (error.extensions || {}).code || null);
      }
      return answer.data;
    });
  }

  function explain(error) {
    if (error.code === "FORBIDDEN") {
      return "This token may not read BI aggregates: it takes an ADMIN, AUDITOR or " +
        "APPROVER (a token needs the bi:read scope). Prism said: " + error.message;
    }
    if (error.code === "PERSISTED_QUERY_NOT_FOUND" || error.code === "PERSISTED_QUERY_REQUIRED") {
      return "The dashboard's operations are not registered on this server (Prism " +
        "registers them when it starts; an operator can push prism/web/dashboard.graphql).";
    }
    return error.message || String(error);
  }

  // --- the token -----------------------------------------------------------------------

  function storedToken() {
    try {
      return window.sessionStorage.getItem(KEY) || "";
    } catch (e) {
      return "";
    }
  }

  function storeToken(value) {
    try {
      if (value) {
        window.sessionStorage.setItem(KEY, value);
      } else {
        window.sessionStorage.removeItem(KEY);
      }
    } catch (e) {
      // Storage refused (private mode): the token lives as long as the page.
    }
  }

  function whoIs() {
    return call("DashboardViewer").then(function (data) {
      var viewer = data.viewer;
      var name = viewer.user ? viewer.user.email + " (" + viewer.user.role + ")" :
        "a service token (" + viewer.scopes.join(", ") + ")";
      return name + ", " + viewer.organization.name;
    });
  }

  function signedIn(name) {
    who.textContent = "Signed in: " + name;
    form.hidden = true;
    signOut.hidden = false;
    range.hidden = false;
    load();
  }

  function signedOut(message) {
    token = "";
    storeToken("");
    who.textContent = message || "Not signed in";
    form.hidden = false;
    signOut.hidden = true;
    range.hidden = true;
    panels.hidden = true;
    showProblem("");
    destroyCharts();
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var value = input.value.trim().replace(/^Bearer\s+/i, "");
    if (!value) {
      who.textContent = "Paste a token first.";
      return;
    }
    token = value;
    who.textContent = "Checking the token…";
    whoIs().then(function (name) {
      storeToken(token);
      input.value = "";
      signedIn(name);
      fromInput.focus();
    }, function (error) {
      token = "";
      who.textContent = "Token refused: " + explain(error);
    });
  });

  signOut.addEventListener("click", function () {
    signedOut();
    input.focus();
  });

  // --- the range -----------------------------------------------------------------------

  function isoDay(time) {
    return new Date(time).toISOString().slice(0, 10);
  }

  function dayTime(iso) {
    return Date.parse(iso + "T00:00:00Z");
  }

  function todayUtc() {
    return isoDay(Date.now());
  }

  function defaultRange() {
    var to = todayUtc();
    fromInput.value = isoDay(dayTime(to) - (DEFAULT_DAYS - 1) * DAY_MS);
    toInput.value = to;
  }

  range.addEventListener("submit", function (event) {
    event.preventDefault();
    load();
  });

  function showProblem(message) {
    problem.textContent = message;
    problem.hidden = !message;
  }

  function load() {
    var from = fromInput.value;
    var to = toInput.value;
    if (!from || !to) {
      showProblem("Choose both days of the range.");
      return;
    }
    var days = Math.round((dayTime(to) - dayTime(from)) / DAY_MS) + 1;
    if (days < 1) {
      showProblem("The range starts after it ends: choose a From day on or before To.");
      return;
    }
    if (days > MAX_DAYS) {
      showProblem("The range is " + days + " days long: at most " + MAX_DAYS + ".");
      return;
    }
    var ticket = ++loading;
    main.setAttribute("aria-busy", "true");
    who.setAttribute("data-loading", "true");
    call("Dashboard", { from: from, to: to, periodDays: days }).then(function (data) {
      if (ticket !== loading) {
        return;
      }
      showProblem("");
      draw(data, from, to, days);
      panels.hidden = false;
      main.setAttribute("data-range", from + "/" + to);
    }, function (error) {
      if (ticket !== loading) {
        return;
      }
      if (error.code === "UNAUTHENTICATED") {
        signedOut("Signed out: " + error.message);
        return;
      }
      showProblem(explain(error));
    }).then(function () {
      if (ticket === loading) {
        main.removeAttribute("aria-busy");
        who.removeAttribute("data-loading");
      }
    });
  }

  // --- drawing -------------------------------------------------------------------------

  function setTile(key, value, text) {
    var cell = main.querySelector('[data-tile="' + key + '"]');
    cell.setAttribute("data-value", value === null ? "" : String(value));
    cell.textContent = text;
  }

  function fillTable(id, rows) {
    var body = document.querySelector("#" + id + "-table tbody");
    body.textContent = "";
    rows.forEach(function (cells) {
      var row = document.createElement("tr");
      cells.forEach(function (cell, index) {
        var element = document.createElement(index === 0 ? "th" : "td");
        if (index === 0) {
          element.setAttribute("scope", "row");
        }
        element.textContent = cell.text;
        if (cell.value !== undefined) {
          element.setAttribute("data-value", cell.value === null ? "" : String(cell.value));
        }
        row.appendChild(element);
      });
      body.appendChild(row);
    });
  }

  function note(id, text) {
    document.getElementById(id + "-note").textContent = text;
  }

  function describe(id, text) {
    document.getElementById(id + "-chart").setAttribute(
      "aria-label", text + " The numbers are in the table below the chart."
    );
  }

  var charts = {};

  function destroyCharts() {
    Object.keys(charts).forEach(function (id) {
      charts[id].destroy();
    });
    charts = {};
  }

  function chart(id, config) {
    if (!window.Chart) {
      return;
    }
    if (charts[id]) {
      charts[id].destroy();
    }
    charts[id] = new Chart(document.getElementById(id + "-chart"), config);
  }

  function axis(label, wholeNumbers) {
    return {
      beginAtZero: true,
      title: { display: true, text: label },
      ticks: wholeNumbers ? { precision: 0 } : {},
    };
  }

  function barChart(labels, values, colors, label, horizontal, wholeNumbers) {
    return {
      type: "bar",
      data: {
        labels: labels,
        datasets: [{ label: label, data: values, backgroundColor: colors, borderWidth: 0 }],
      },
      options: {
        indexAxis: horizontal ? "y" : "x",
        plugins: { legend: { display: false } },
        scales: horizontal ?
          { x: axis(label, wholeNumbers) } :
          { y: axis(label, wholeNumbers) },
      },
    };
  }

  function draw(data, from, to, days) {
    var period = from + " to " + to;
    drawTiles(data, period, days);
    drawTrend(data.dailySummary, period);
    drawRisk(data.riskDistribution, period);
    drawFeedback(data.feedbackAcceptance, period);
    drawModels(data.usageByModel, period);
  }

  function drawTiles(data, period, days) {
    var usage = data.usageTotal[0] || { analyses: 0, tokensUsed: 0, costUsd: "0" };
    var feedback = data.feedbackAcceptance[0] || { feedback: 0, accepted: 0, acceptanceRate: 0 };
    var documents = data.riskDistribution.reduce(function (sum, row) {
      return sum + row.documents;
    }, 0);
    document.getElementById("range-period").textContent = "(" + period + ")";
    setTile("documents", documents, count(documents));
    setTile("analyses", usage.analyses, count(usage.analyses));
    setTile("cost", usage.costUsd, usd(usage.costUsd));
    setTile(
      "acceptance",
      feedback.acceptanceRate,
      percent(feedback.acceptanceRate * 100) + " of " + count(feedback.feedback)
    );
    var summary = data.executiveSummary;
    document.getElementById("executive-days").textContent = String(days);
    document.getElementById("executive-period").textContent =
      "(" + summary.periodStart + " to " + summary.periodEnd + ")";
    setTile("processed", summary.totalDocumentsProcessed, count(summary.totalDocumentsProcessed));
    setTile("activeUsers", summary.totalActiveUsers, count(summary.totalActiveUsers));
    setTile(
      "highRisk",
      summary.highRiskDocumentsCount,
      count(summary.highRiskDocumentsCount) + " (" + percent(summary.highRiskPercentage) + ")"
    );
    setTile("costPerDocument", summary.costPerDocument, usd(summary.costPerDocument));
    setTile(
      "processingTime",
      summary.averageProcessingTimeSeconds,
      seconds(summary.averageProcessingTimeSeconds)
    );
    setTile("satisfaction", summary.averageUserSatisfaction, rating(summary.averageUserSatisfaction));
  }

  function drawTrend(days, period) {
    var analyses = 0;
    var cost = 0;
    fillTable("trend", days.map(function (day) {
      analyses += day.totalAnalyses;
      cost += Number(day.totalCostUsd);
      return [
        { text: day.date, value: day.date },
        { text: count(day.totalAnalyses), value: day.totalAnalyses },
        { text: usd(day.totalCostUsd), value: day.totalCostUsd },
        { text: count(day.totalFeedbackItems), value: day.totalFeedbackItems },
        { text: day.avgProcessingTimeSeconds.toFixed(2), value: day.avgProcessingTimeSeconds },
      ];
    }));
    var busy = days.filter(function (day) {
      return day.totalAnalyses > 0;
    }).length;
    var text = "Daily trend, " + period + ": " + count(analyses) + " analyses on " + count(busy) +
      " of " + count(days.length) + " days, costing " + usd(cost) + ".";
    note("trend", text);
    describe("trend", text);
    chart("trend", {
      type: "bar",
      data: {
        labels: days.map(function (day) { return day.date; }),
        datasets: [
          {
            type: "bar",
            label: "Analyses",
            data: days.map(function (day) { return day.totalAnalyses; }),
            backgroundColor: BLUE,
            yAxisID: "analyses",
            order: 2,
          },
          {
            type: "line",
            label: "Cost (USD)",
            data: days.map(function (day) { return Number(day.totalCostUsd); }),
            borderColor: AMBER,
            backgroundColor: AMBER,
            pointRadius: 2,
            yAxisID: "cost",
            order: 1,
          },
        ],
      },
      options: {
        interaction: { mode: "index", intersect: false },
        scales: {
          x: { ticks: { maxRotation: 0, autoSkip: true, autoSkipPadding: 12 } },
          analyses: Object.assign(axis("Analyses", true), { position: "left" }),
          cost: {
            position: "right",
            beginAtZero: true,
            grid: { drawOnChartArea: false },
            title: { display: true, text: "Cost (USD)" },
          },
        },
      },
    });
  }

  function drawRisk(rows, period) {
    var total = 0;
    var byLevel = RISKS.map(function (risk) {
      var documents = rows.filter(function (row) {
        return row.riskLevel === risk.level;
      }).reduce(function (sum, row) {
        return sum + row.documents;
      }, 0);
      total += documents;
      return { risk: risk, documents: documents };
    });
    fillTable("risk", byLevel.map(function (entry) {
      return [
        { text: entry.risk.label, value: entry.risk.level },
        { text: count(entry.documents), value: entry.documents },
      ];
    }));
    var text = "Risk distribution, " + period + ": " + byLevel.map(function (entry) {
      return entry.risk.label.toLowerCase() + " " + count(entry.documents);
    }).join(", ") + " of " + count(total) + " documents uploaded.";
    note("risk", text);
    describe("risk", text);
    chart("risk", barChart(
      byLevel.map(function (entry) { return entry.risk.label; }),
      byLevel.map(function (entry) { return entry.documents; }),
      byLevel.map(function (entry) { return entry.risk.color; }),
      "Documents",
      false,
      true
    ));
  }

  function drawFeedback(rows, period) {
    var total = rows[0] || {
      feedback: 0, accepted: 0, rejected: 0, modified: 0, custom: 0,
      acceptanceRate: 0, averageRating: null,
    };
    fillTable("feedback", ACTIONS.map(function (action) {
      return [
        { text: action.label, value: action.key },
        { text: count(total[action.key]), value: total[action.key] },
      ];
    }));
    var text = "Feedback acceptance, " + period + ": " + count(total.feedback) +
      " feedback given, " + percent(total.acceptanceRate * 100) + " accepted as the AI wrote " +
      "it; average rating " + rating(total.averageRating) + ".";
    note("feedback", text);
    describe("feedback", text);
    chart("feedback", barChart(
      ACTIONS.map(function (action) { return action.label; }),
      ACTIONS.map(function (action) { return total[action.key]; }),
      ACTIONS.map(function (action) { return action.color; }),
      "Feedback",
      true,
      true
    ));
  }

  function drawModels(rows, period) {
    var models = rows.slice().sort(function (a, b) {
      return Number(b.costUsd) - Number(a.costUsd) || b.analyses - a.analyses;
    });
    fillTable("models", models.map(function (row) {
      return [
        { text: row.model === null ? "(none)" : row.model, value: row.model },
        { text: count(row.analyses), value: row.analyses },
        { text: count(row.tokensUsed), value: row.tokensUsed },
        { text: usd(row.costUsd), value: row.costUsd },
      ];
    }));
    var costly = models.some(function (row) {
      return Number(row.costUsd) > 0;
    });
    var text = "AI cost by model, " + period + ": " + (models.length ? models.map(function (row) {
      return row.model + " " + usd(row.costUsd) + " for " + count(row.analyses) + " analyses";
    }).join("; ") : "no analysis") + ".";
    if (models.length && !costly) {
      text += " No model cost anything in this range: the chart shows analyses per model.";
    }
    note("models", text);
    describe("models", text);
    chart("models", barChart(
      models.map(function (row) { return row.model; }),
      models.map(function (row) { return costly ? Number(row.costUsd) : row.analyses; }),
      models.map(function () { return VIOLET; }),
      costly ? "Cost (USD)" : "Analyses",
      true,
      !costly
    ));
  }

  // --- start ---------------------------------------------------------------------------

  defaultRange();
  token = storedToken();
  if (token) {
    who.textContent = "Checking the stored token…";
    whoIs().then(signedIn, function (error) {
      signedOut("Signed out: " + explain(error));
    });
  } else {
    signedOut();
  }
})();
