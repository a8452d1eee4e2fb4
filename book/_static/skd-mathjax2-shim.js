// The ipywidgets' embed-amd.js (html-manager 1.x) typesets widget labels with MathJax 2's
// MathJax.Hub.Queue(["Typeset", MathJax.Hub, element]); the book loads MathJax 3, which has no
// Hub. Every object assigned to window.MathJax (MathJax 3's configuration, then MathJax 3 itself)
// gets a Hub whose Queue typesets the element with MathJax 3's API.
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
})();
