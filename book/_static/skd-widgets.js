// What the ipywidgets' embed-amd.js (@jupyter-widgets/html-manager 1.x) needs on the book's pages,
// loaded before MathJax, RequireJS and the embed script.
//
// 1. MathJax 2's API. The embed typesets widget labels with MathJax.Hub.Queue(["Typeset",
//    MathJax.Hub, element]); the book loads MathJax 3, which has no Hub. Every object assigned to
//    window.MathJax (MathJax 3's configuration, then MathJax 3 itself) gets a Hub whose Queue
//    typesets the element with MathJax 3's API.
// 2. Where the embed lies. Its webpack public path (for the icon fonts) is the folder of its AMD
//    module "@jupyter-widgets/html-manager/dist/libembed-amd" as RequireJS resolves it: mapped
//    here to _static/widgets, where `make widgets` copies it and its fonts (else RequireJS looks
//    for the fonts next to the page).
(function () {
  "use strict";
  function withHub(mathjax) {
    if (mathjax && typeof mathjax === "object" && !mathjax.Hub) {
      mathjax.Hub = {
        Queue: function (job) {
          var element = Array.isArray(job) ? job[2] : undefined;
          var api = window.MathJax;
          if (api && typeof api.typesetPromise === "function") {
            api.typesetPromise(element ? [element] : undefined).catch(function () {});
          }
        },
      };
    }
    return mathjax;
  }
  var current = withHub(window.MathJax);
  Object.defineProperty(window, "MathJax", {
    configurable: true,
    get: function () {
      return current;
    },
    set: function (value) {
      current = withHub(value);
    },
  });

  var root = document.documentElement.dataset.content_root || "";
  var paths = { "@jupyter-widgets/html-manager/dist": root + "_static/widgets" };
  if (typeof window.require === "function" && typeof window.require.config === "function") {
    window.require.config({ paths: paths });
  } else {
    window.require = { paths: paths }; // RequireJS reads this configuration when it loads
  }
})();
