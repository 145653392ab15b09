// fullduplex.mjs: the browser client as an ES module.
//   import { FullDuplexSocket, Room } from "/fullduplex.mjs";
// fullduplex.js is a classic script that defines globalThis.fullduplex; importing it
// for its side effect and re-exporting keeps one source for both ways of loading.
import "./fullduplex.js";

const fullduplex = globalThis.fullduplex;
export const FullDuplexSocket = fullduplex.FullDuplexSocket;
export const Room = fullduplex.Room;
export default fullduplex;
