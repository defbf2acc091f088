% rebase('layout', title=title)
<table>
<thead><tr><th>#</th><th>Name</th><th>E-mail</th><th>City</th><th>Score</th></tr></thead>
<tbody>
% for p in rows:
<tr><td>{{p.id}}</td><td>{{p.name}}</td><td>{{p.email}}</td><td>{{p.city}}</td><td>{{p.score}}</td></tr>
% end
</tbody>
</table>
