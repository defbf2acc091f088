<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{title}}</title>
<link rel="stylesheet" href="/static/site.css">
</head>
<body>
<header><h1>{{title}}</h1><nav><a href="/">Home</a> | <a href="/about">About</a></nav></header>
<main>
{{!base}}
</main>
<footer>Rendered by krait</footer>
</body>
</html>
