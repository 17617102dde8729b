/* AKIG SPA: Tableau de bord (/), Contrats (/contrats), Paiements (/paiements). */
(function () {
  'use strict';
  var TOKEN_KEY = 'akig.token';
  var root = document.getElementById('app');

  function esc(v) {
    return String(v === null || v === undefined ? '' : v).replace(/[&<>"']/g, function (c) {
      return { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c];
    });
  }
  function euros(cents) {
    return (Number(cents) / 100).toLocaleString('fr-FR', { style: 'currency', currency: 'EUR' });
  }
  function token() { return localStorage.getItem(TOKEN_KEY); }

  function api(path, opts) {
    opts = opts || {};
    var headers = { 'Accept': 'application/json' };
    if (opts.body) headers['Content-Type'] = 'application/json';
    if (token()) headers['Authorization'] = 'Bearer ' + token();
    return fetch(path, { method: opts.method || 'GET', headers: headers, body: opts.body ? JSON.stringify(opts.body) : undefined })
      .then(function (res) {
        return res.json().catch(function () { return {}; }).then(function (data) {
          if (res.status === 401 && path !== '/api/login') {
            localStorage.removeItem(TOKEN_KEY);
            throw { status: 401, message: data.error || 'Non authentifié' };
          }
          if (!res.ok) throw { status: res.status, message: data.error || ('HTTP ' + res.status), data: data };
          return data;
        });
      });
  }

  function renderLogin(next) {
    root.innerHTML = '<h1>Connexion</h1><form class="login card">' +
      '<input name="email" type="email" placeholder="E-mail" required autocomplete="username">' +
      '<input name="password" type="password" placeholder="Mot de passe" required autocomplete="current-password">' +
      '<button type="submit">Se connecter</button><p class="error" id="login-error"></p></form>';
    root.querySelector('form').addEventListener('submit', function (ev) {
      ev.preventDefault();
      var f = ev.target;
      api('/api/login', { method: 'POST', body: { email: f.email.value, password: f.password.value } })
        .then(function (d) { localStorage.setItem(TOKEN_KEY, d.token); next(); })
        .catch(function (e) { document.getElementById('login-error').textContent = e.message; });
    });
  }

  function withAuth(render) {
    return function (params) {
      if (!token()) { renderLogin(function () { render(params); }); return; }
      render(params);
    };
  }

  function failed(e, retry) {
    if (e && e.status === 401) { renderLogin(retry); return; }
    root.innerHTML = '<div class="card error">Erreur : ' + esc(e && e.message ? e.message : e) + '</div>';
  }

  function pager(page, perPage, total, base) {
    var last = Math.max(1, Math.ceil(total / perPage));
    return '<div class="pager">' +
      (page > 1 ? '<a href="' + base + '?page=' + (page - 1) + '" data-link>&larr; Précédent</a>' : '') +
      '<span class="muted">Page ' + page + ' / ' + last + ' (' + total + ' contrats)</span>' +
      (page < last ? '<a href="' + base + '?page=' + (page + 1) + '" data-link>Suivant &rarr;</a>' : '') +
      '</div>';
  }

  function dashboard() {
    root.innerHTML = '<h1>Tableau de bord</h1><p class="muted">Vérification des services…</p>';
    fetch('/api/health').then(function (res) {
      return res.json().then(function (h) { return { code: res.status, h: h }; });
    }).then(function (r) {
      var h = r.h, checks = h.checks || {};
      function chk(name, c) {
        c = c || {};
        return '<div class="card"><div class="muted">' + esc(name) + '</div><div class="' + esc(c.status) + '">' +
          esc(c.status || 'inconnu') + '</div><div class="muted">' +
          (c.latency_ms !== undefined ? esc(c.latency_ms) + ' ms' : '') + (c.error ? ' · ' + esc(c.error) : '') + '</div></div>';
      }
      root.innerHTML = '<h1>Tableau de bord</h1>' +
        (h.banner && h.banner.message ? '<div class="card warn" role="status">' + esc(h.banner.message) + '</div>' : '') +
        '<div class="card"><strong>API :</strong> <span class="' + (r.code === 200 ? 'ok' : 'error') + '">' +
        esc(h.status) + '</span> ' + (h.error ? '<span class="error">' + esc(h.error) + '</span>' : '') +
        (h.read_only ? ' <span class="warn">Mode maintenance (lecture seule)</span>' : '') +
        '<div class="muted">révision ' + esc(h.revision) + ' · pid ' + esc(h.pid) + ' · uptime ' + esc(h.uptime_s) + ' s</div></div>' +
        '<div class="grid">' + chk('Base de données', checks.database) + chk('Cache / sessions', checks.redis) + '</div>';
    }).catch(function (e) { failed(e, dashboard); });
  }

  function contracts(params) {
    var page = Number(params.get('page')) || 1;
    root.innerHTML = '<h1>Contrats</h1><p class="muted">Chargement…</p>';
    api('/api/contracts?page=' + page + '&per_page=20').then(function (d) {
      var rows = d.items.map(function (c) {
        return '<tr><td>' + esc(c.reference) + '</td><td>' + esc(c.tenant_name) + '</td><td>' + esc(c.property_address) +
          '</td><td>' + euros(c.rent_cents) + '</td><td>' + esc(c.start_date) + ' → ' + esc(c.end_date) +
          '</td><td><span class="badge ' + esc(c.status) + '">' + esc(c.status) + '</span></td>' +
          '<td><a href="#" data-pdf="' + esc(c.id) + '">PDF</a></td></tr>';
      }).join('');
      root.innerHTML = '<h1>Contrats</h1>' + pager(d.page, d.per_page, d.total, '/contrats') +
        '<table><thead><tr><th>Référence</th><th>Locataire</th><th>Bien</th><th>Loyer</th><th>Période</th><th>Statut</th><th></th></tr></thead><tbody>' +
        rows + '</tbody></table>';
      Array.prototype.forEach.call(root.querySelectorAll('[data-pdf]'), function (a) {
        a.addEventListener('click', function (ev) {
          ev.preventDefault();
          fetch('/api/contracts/' + a.getAttribute('data-pdf') + '/pdf', { headers: { 'Authorization': 'Bearer ' + token() } })
            .then(function (res) { if (!res.ok) throw { status: res.status, message: 'PDF indisponible' }; return res.blob(); })
            .then(function (b) { window.open(URL.createObjectURL(b), '_blank'); })
            .catch(function (e) { alert(e.message); });
        });
      });
    }).catch(function (e) { failed(e, function () { contracts(params); }); });
  }

  function payments(params) {
    var page = Number(params.get('page')) || 1;
    var t0 = Date.now();
    root.innerHTML = '<h1>Paiements</h1><p class="muted">Chargement…</p>';
    api('/api/payments?page=' + page + '&per_page=20').then(function (d) {
      var ms = Date.now() - t0;
      var rows = d.items.map(function (c) {
        var paid = c.payments.filter(function (p) { return p.status === 'paid'; }).length;
        var late = c.payments.filter(function (p) { return p.status === 'late'; }).length;
        var next = c.payments.filter(function (p) { return p.status === 'due'; })[0];
        return '<tr><td>' + esc(c.reference) + '</td><td>' + esc(c.tenant_name) + '</td><td>' + c.payments.length +
          '</td><td>' + paid + '</td><td>' + (late ? '<span class="badge late">' + late + '</span>' : '0') + '</td><td>' +
          (next ? esc(next.due_date) + ' · ' + euros(next.amount_cents) : '-') + '</td></tr>';
      }).join('');
      root.innerHTML = '<h1>Paiements</h1><p class="muted">Chargé en ' + ms + ' ms</p>' + pager(d.page, d.per_page, d.total, '/paiements') +
        '<table><thead><tr><th>Contrat</th><th>Locataire</th><th>Échéances</th><th>Payées</th><th>En retard</th><th>Prochaine</th></tr></thead><tbody>' +
        rows + '</tbody></table>';
    }).catch(function (e) { failed(e, function () { payments(params); }); });
  }

  var routes = { '/': dashboard, '/contrats': withAuth(contracts), '/paiements': withAuth(payments) };

  function render() {
    var path = location.pathname.replace(/\/+$/, '') || '/';
    var view = routes[path];
    Array.prototype.forEach.call(document.querySelectorAll('nav a'), function (a) {
      a.classList.toggle('active', a.getAttribute('href') === path);
    });
    document.getElementById('session').textContent = token() ? 'connecté' : '';
    if (!view) { root.innerHTML = '<h1>Page introuvable</h1>'; return; }
    view(new URLSearchParams(location.search));
  }

  document.addEventListener('click', function (ev) {
    var a = ev.target.closest && ev.target.closest('a[data-link]');
    if (!a || ev.metaKey || ev.ctrlKey) return;
    ev.preventDefault();
    history.pushState(null, '', a.getAttribute('href'));
    render();
  });
  window.addEventListener('popstate', render);
  render();
})();
